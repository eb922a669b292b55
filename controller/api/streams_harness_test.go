package api_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"hash"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"strata/agent/wire"
)

// This file gives the rig's fake guest backup and restore over the real
// data channels: a backup streams a header line naming the guest's
// databases, then Pad deterministic pseudo-random bytes; a restore reads
// each link's stream, checks it against the digest the controller sent
// (as the real agent does), and takes the databases of the last link.

// streamKnobs tune a fake guest's streams (fakeCompute.streams).
type streamKnobs struct {
	// Pad is the filler after the header (default 3 MiB + 17 bytes, so
	// streams cross segment boundaries).
	Pad int
	// ChunkDelay slows a backup down per 64 KiB written.
	ChunkDelay time.Duration
	// CutAfter, if set, cuts the guest's connection after this many
	// bytes of a backup (the agent's connection dropping mid-stream); the
	// agent then reconnects.
	CutAfter int
	// RawBytes, if set, is the native size the guest reports.
	RawBytes int64
	// NoIncremental refuses incrementals the way Redis's agent does.
	NoIncremental bool
}

type fakeHeader struct {
	DBs []string `json:"dbs"`
}

func (g *fakeGuest) handleStream(op wire.Operation) wire.Result {
	g.mu.Lock()
	if r, ok := g.results[op.ID]; ok {
		g.mu.Unlock()
		return r
	}
	if ch, ok := g.inflight[op.ID]; ok {
		// A resend while it runs: answer when it ends.
		g.mu.Unlock()
		<-ch
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.results[op.ID]
	}
	ch := make(chan struct{})
	g.inflight[op.ID] = ch
	g.mu.Unlock()

	var r wire.Result
	if op.Kind == wire.KindBackup {
		r = g.backup(op)
	} else if op.Kind == wire.KindPublishLog {
		r = g.publishLog(op)
	} else {
		r = g.restore(op)
	}
	g.mu.Lock()
	g.results[op.ID] = r
	delete(g.inflight, op.ID)
	g.mu.Unlock()
	close(ch)
	return r
}

func (g *fakeGuest) backup(op wire.Operation) wire.Result {
	var a wire.BackupArgs
	if err := wire.DecodeStrict(op.Args, &a); err != nil {
		return opErr(wire.CodeInvalidArgument, "bad backup args: %v", err)
	}
	g.mu.Lock()
	prepared, knobs, c := g.prepared, g.streams, g.client
	var dbs []string
	for d := range g.dbs {
		dbs = append(dbs, d)
	}
	if prepared {
		g.note("backup %s", g.lastBoot.InstanceID)
	}
	g.mu.Unlock()
	sort.Strings(dbs)
	if !prepared {
		return opErr(wire.CodeFailedPrecondition, "not prepared")
	}
	if a.Parent != nil && knobs.NoIncremental {
		return opErr(wire.CodeNotSupported, "redis does not support incremental backups (an RDB snapshot is always whole)")
	}
	st, err := c.OpenStream(context.Background(), op.ID, 0)
	if err != nil {
		return opErr(wire.CodeUnavailable, "backup: %v", err)
	}
	defer st.Close()
	h := sha256.New()
	out := io.MultiWriter(st, h)
	header, _ := json.Marshal(fakeHeader{DBs: dbs})
	n := 0
	write := func(p []byte) error {
		if knobs.CutAfter > 0 && n < knobs.CutAfter && n+len(p) >= knobs.CutAfter {
			// The connection drops; the agent reconnects once its
			// session has wound down (which waits for this operation).
			g.mu.Lock()
			cancel, done, boot := g.cancel, g.done, g.lastBoot
			g.cancel = nil
			g.mu.Unlock()
			cancel()
			go func() { <-done; g.boot(g.t, boot) }()
		}
		_, err := out.Write(p)
		n += len(p)
		return err
	}
	if err := write(append(header, '\n')); err != nil {
		return opErr(wire.CodeUnavailable, "backup stream: %v", err)
	}
	pad := knobs.Pad
	if pad == 0 {
		pad = 3<<20 + 17
	}
	for chunk := range filler(op.ID, pad) {
		if knobs.ChunkDelay > 0 {
			time.Sleep(knobs.ChunkDelay)
		}
		if err := write(chunk); err != nil {
			return opErr(wire.CodeUnavailable, "backup stream: %v", err)
		}
	}
	if err := st.CloseWrite(); err != nil {
		return opErr(wire.CodeUnavailable, "backup stream: %v", err)
	}
	pos := wire.BackupPosition{StartLSN: "0", EndLSN: strconv.Itoa(len(dbs)), GTID: "0-1-42"}
	if a.Parent != nil {
		pos.StartLSN = a.Parent.EndLSN
	}
	raw := int64(n) * 2
	if knobs.RawBytes > 0 {
		raw = knobs.RawBytes
	}
	return okResult(wire.BackupResult{Stream: wire.StreamDigest{Bytes: int64(n), SHA256: wire.SHA256Hex(h.Sum(nil))},
		RawBytes: raw, Compression: wire.CompressionZstd, Position: pos, ServerVersion: "fake"})
}

// filler yields size deterministic pseudo-random bytes in 64 KiB chunks.
func filler(seed string, size int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		block := sha256.Sum256([]byte(seed))
		buf := make([]byte, 0, 64<<10)
		var ctr [8]byte
		for i := 0; size > 0; i++ {
			binary.BigEndian.PutUint64(ctr[:], uint64(i))
			sum := sha256.Sum256(append(block[:], ctr[:]...))
			take := min(len(sum), size)
			buf = append(buf, sum[:take]...)
			size -= take
			if len(buf) == cap(buf) || size == 0 {
				if !yield(buf) {
					return
				}
				buf = buf[:0]
			}
		}
	}
}

func (g *fakeGuest) restore(op wire.Operation) wire.Result {
	var a wire.RestoreArgs
	if err := wire.DecodeStrict(op.Args, &a); err != nil {
		return opErr(wire.CodeInvalidArgument, "bad restore args: %v", err)
	}
	if err := a.Validate(); err != nil {
		return opErr(wire.CodeInvalidArgument, "restore: %v", err)
	}
	g.mu.Lock()
	prepared, c, fail := g.prepared, g.client, g.repl.failRestore
	g.mu.Unlock()
	if prepared {
		return opErr(wire.CodeFailedPrecondition, "prepared already")
	}
	if fail != "" {
		return opErr(wire.CodeInternal, "restore: %s", fail)
	}
	var last fakeHeader
	for i, link := range a.Chain {
		st, err := c.OpenStream(context.Background(), op.ID, i)
		if err != nil {
			return opErr(wire.CodeUnavailable, "restore: backup %s: %v", link.BackupID, err)
		}
		d := &countingHash{h: sha256.New()}
		br := bufio.NewReader(io.TeeReader(st, d))
		line, err := br.ReadBytes('\n')
		if err == nil {
			_, err = io.Copy(io.Discard, br)
		}
		st.Close()
		if err != nil {
			return opErr(wire.CodeUnavailable, "restore: backup %s: %v", link.BackupID, err)
		}
		if got := (wire.StreamDigest{Bytes: d.n, SHA256: wire.SHA256Hex(d.h.Sum(nil))}); !got.Equal(link.Stream) {
			return opErr(wire.CodeInternal, "restore: backup %s: stream does not match its backup's digest", link.BackupID)
		}
		var hdr fakeHeader
		if json.Unmarshal(line, &hdr) != nil {
			return opErr(wire.CodeInternal, "restore: backup %s: garbled header", link.BackupID)
		}
		last = hdr
	}
	g.mu.Lock()
	for _, d := range last.DBs {
		g.dbs[d] = true
	}
	g.prepared = true
	g.repl.standby = a.Standby
	g.note("restore %s standby=%v", g.lastBoot.InstanceID, a.Standby)
	ids := make([]string, len(a.Chain))
	for i, l := range a.Chain {
		ids[i] = l.BackupID
	}
	g.note("chain %s %s", g.lastBoot.InstanceID, strings.Join(ids, ","))
	g.mu.Unlock()
	return okResult(wire.RestoreResult{Backups: len(a.Chain)})
}

type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return len(p), nil
}
