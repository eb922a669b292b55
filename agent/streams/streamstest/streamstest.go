// Package streamstest keeps operation data streams in memory: a stand-in
// for the agent's data channels (dispatch.Streams) in the managers' and
// dispatcher's tests, so a backup's compressed stream can be stored,
// damaged and fed back to a restore without a controller.
//
// It is for tests only and must never be imported by the agent binary.
package streamstest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"strata/agent/dispatch"
	"strata/agent/wire"
)

// Memory holds streams by operation id and index. A stream opened by a
// backup is recorded when the agent closes its write side; a restore's
// stream reads what Feed put there.
type Memory struct {
	mu      sync.Mutex
	written map[string][]byte
	feed    map[string][]byte
	// Refuse, if set, makes OpenStream fail as if the controller
	// refused the stream.
	Refuse bool
	// CutAfter, if set, makes a backup stream's writes fail after this
	// many bytes, as when the controller closes it or the connection
	// drops.
	CutAfter int
}

// NewMemory returns empty streams.
func NewMemory() *Memory { return &Memory{written: map[string][]byte{}, feed: map[string][]byte{}} }

func key(opID string, index int) string { return fmt.Sprintf("%s/%d", opID, index) }

// Written returns what a backup operation sent on its stream (nil if it
// never closed its write side).
func (m *Memory) Written(opID string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.written[key(opID, 0)]
}

// Feed sets what stream index of a restore operation will carry.
func (m *Memory) Feed(opID string, index int, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.feed[key(opID, index)] = data
}

// Digest is the wire digest of data.
func Digest(data []byte) wire.StreamDigest {
	sum := sha256.Sum256(data)
	return wire.StreamDigest{Bytes: int64(len(data)), SHA256: wire.SHA256Hex(sum[:])}
}

// OpenStream implements dispatch.Streams.
func (m *Memory) OpenStream(_ context.Context, opID string, index int) (dispatch.Stream, error) {
	if m.Refuse {
		return nil, fmt.Errorf("controller refused the data stream: stream %d of %s", index, opID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return &stream{m: m, key: key(opID, index), r: bytes.NewReader(m.feed[key(opID, index)]), cutAfter: m.CutAfter}, nil
}

// ErrCut is what a write to a cut stream returns.
var ErrCut = errors.New("stream closed by the controller")

type stream struct {
	m        *Memory
	key      string
	r        io.Reader
	buf      bytes.Buffer
	cutAfter int
}

func (s *stream) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *stream) Write(p []byte) (int, error) {
	if s.cutAfter > 0 && s.buf.Len()+len(p) > s.cutAfter {
		return 0, ErrCut
	}
	return s.buf.Write(p)
}
func (s *stream) Close() error { return nil }
func (s *stream) CloseWrite() error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.written[s.key] = bytes.Clone(s.buf.Bytes())
	return nil
}

// Backup runs a backup operation opID through d (whose Streams must be
// m) and returns its result; Written(opID) then holds the stream.
func Backup(ctx context.Context, d *dispatch.Dispatcher, opID string, parent *wire.BackupPosition) (wire.BackupResult, error) {
	args, _ := json.Marshal(wire.BackupArgs{BackupID: opID, Parent: parent})
	var res wire.BackupResult
	err := d.Run(ctx, wire.Operation{ID: opID, Kind: wire.KindBackup, Args: args}).Decode(&res)
	return res, err
}

// Link is a stored backup for Restore: its result and its stream.
type Link struct {
	ID     string
	Result wire.BackupResult
	Data   []byte
}

// Stored returns the backup opID as m holds it.
func (m *Memory) Stored(opID string, res wire.BackupResult) Link {
	return Link{ID: opID, Result: res, Data: m.Written(opID)}
}

// Restore feeds the chain's streams to a restore operation opID run
// through d (whose Streams must be m) and returns its result.
func Restore(ctx context.Context, d *dispatch.Dispatcher, m *Memory, opID string, base wire.RestoreArgs, chain ...Link) (wire.RestoreResult, error) {
	args := base
	args.Chain = nil
	for i, l := range chain {
		m.Feed(opID, i, l.Data)
		args.Chain = append(args.Chain, wire.RestoreBackup{BackupID: l.ID, Incremental: i > 0, Position: l.Result.Position,
			Stream: l.Result.Stream, Compression: l.Result.Compression})
	}
	data, _ := json.Marshal(args)
	var res wire.RestoreResult
	err := d.Run(ctx, wire.Operation{ID: opID, Kind: wire.KindRestore, Args: data}).Decode(&res)
	return res, err
}
