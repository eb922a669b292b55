// Package guestlogs publishes guest logs (Trove's log-publish) to the
// object store the backups use, and discards them: the agent streams a
// log's whole current content over the publish operation's data channel
// (as it streams a backup), the controller checks it against the digest
// the agent reports and stores it as one object, then removes what an
// earlier publish of the same log left. A metafile beside the parts
// records what the last publish stored.
//
// Objects are named as Trove lays them out in its log container:
// <instance>/<log>/log-<time> for the content and <instance>/<log>.metafile
// for the metafile, under Root in the store. guestlogs must not decide
// who may see them: callers check that the instance is the caller's.
package guestlogs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/objectstore"
)

// Agents is what publishing needs of the agent endpoint.
type Agents interface {
	Queue(ctx context.Context, instanceID string, op wire.Operation, opts agentendpoint.QueueOptions) error
	Result(ctx context.Context, instanceID, opID string) (wire.Result, bool, error)
	ExpectStream(instanceID, opID string, index int) (*agentendpoint.StreamWait, error)
}

// Root is the store prefix guest logs live under; Container is the name
// Trove's clients are given for it.
const (
	Root      = "guestlogs"
	Container = "database_logs"
)

// Manager publishes and discards guest logs.
type Manager struct {
	Agents Agents
	Store  objectstore.Store
	// StreamTimeout bounds the wait for the agent to start streaming;
	// ResultTimeout the wait for its result once the stream ended.
	StreamTimeout time.Duration
	ResultTimeout time.Duration
	Now           func() time.Time

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// Meta is the metafile: what the last publish stored.
type Meta struct {
	Object      string    `json:"object"`
	Bytes       int64     `json:"bytes"`
	Lines       int64     `json:"lines"`
	SHA256      string    `json:"sha256"`
	PublishedAt time.Time `json:"published_at"`
}

// Prefix is the container prefix of a log's parts (Trove's "prefix").
func Prefix(instanceID, log string) string { return instanceID + "/" + log + "/" }

// Metafile is the container name of a log's metafile.
func Metafile(instanceID, log string) string { return instanceID + "/" + log + ".metafile" }

// Key maps a container object name to its store name.
func Key(object string) string { return Root + "/" + object }

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// lock serialises publishes and discards of one log: a publish removes
// the parts before its own, which must not be another's new one.
func (m *Manager) lock(instanceID, log string) func() {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = map[string]*sync.Mutex{}
	}
	k := instanceID + "/" + log
	l := m.locks[k]
	if l == nil {
		l = &sync.Mutex{}
		m.locks[k] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Published reads a log's metafile; ok is false when nothing is published.
func (m *Manager) Published(ctx context.Context, instanceID, log string) (Meta, bool, error) {
	rc, err := m.Store.Get(ctx, Key(Metafile(instanceID, log)))
	if errors.Is(err, objectstore.ErrNotFound) {
		return Meta{}, false, nil
	}
	if err != nil {
		return Meta{}, false, fmt.Errorf("log %s: metafile: %w", log, err)
	}
	defer rc.Close()
	var meta Meta
	if err := json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&meta); err != nil {
		return Meta{}, false, fmt.Errorf("log %s: metafile: %w", log, err)
	}
	return meta, true, nil
}

// Publish has the instance's agent stream the log and stores it. Nothing
// is left visible when it fails: the new part is removed and the previous
// publish stays as it was.
func (m *Manager) Publish(ctx context.Context, instanceID, log string) (Meta, error) {
	defer m.lock(instanceID, log)()
	var rnd [8]byte
	rand.Read(rnd[:])
	opID := "publish-log-" + hex.EncodeToString(rnd[:])
	args, err := wire.MarshalArgs(wire.PublishLogArgs{Name: log})
	if err != nil {
		return Meta{}, err
	}
	op := wire.Operation{ID: opID, Kind: wire.KindPublishLog, Args: args}
	wait, err := m.Agents.ExpectStream(instanceID, opID, 0)
	if err != nil {
		return Meta{}, err
	}
	defer wait.Close()
	if err := m.Agents.Queue(ctx, instanceID, op, agentendpoint.QueueOptions{Expires: m.now().Add(m.streamTimeout())}); err != nil {
		return Meta{}, fmt.Errorf("queue the publish operation: %w", err)
	}
	st, err := m.awaitStream(ctx, instanceID, opID, wait)
	if err != nil {
		return Meta{}, err
	}
	defer st.Close()

	now := m.now().UTC()
	object := Prefix(instanceID, log) + "log-" + now.Format("20060102T150405.000000000Z")
	h := sha256.New()
	obj, err := m.Store.Put(ctx, Key(object), io.TeeReader(st, h))
	if err != nil {
		m.Store.Delete(context.WithoutCancel(ctx), Key(object))
		return Meta{}, fmt.Errorf("object store: %w", err)
	}
	fail := func(err error) (Meta, error) {
		m.Store.Delete(context.WithoutCancel(ctx), Key(object))
		return Meta{}, err
	}
	res, err := m.awaitResult(ctx, instanceID, opID)
	if err != nil {
		return fail(err)
	}
	var pr wire.PublishLogResult
	if err := res.Decode(&pr); err != nil {
		var oe *wire.OpError
		if errors.As(err, &oe) {
			return fail(oe)
		}
		return fail(fmt.Errorf("the guest's publish result: %w", err))
	}
	got := wire.StreamDigest{Bytes: obj.Size, SHA256: wire.SHA256Hex(h.Sum(nil))}
	if !got.Equal(pr.Stream) {
		return fail(fmt.Errorf("%w: stored %d bytes (sha256 %s), the guest sent %d bytes (sha256 %s); nothing was published",
			ErrDamaged, got.Bytes, got.SHA256, pr.Stream.Bytes, pr.Stream.SHA256))
	}
	meta := Meta{Object: object, Bytes: got.Bytes, Lines: pr.Lines, SHA256: got.SHA256, PublishedAt: now}
	data, _ := json.Marshal(meta)
	if _, err := m.Store.Put(ctx, Key(Metafile(instanceID, log)), bytes.NewReader(data)); err != nil {
		return fail(fmt.Errorf("object store: metafile: %w", err))
	}
	// The new part is complete and recorded: earlier ones go.
	if err := m.removeParts(ctx, instanceID, log, object); err != nil {
		return meta, err
	}
	return meta, nil
}

// Discard removes every published part of the log and its metafile.
func (m *Manager) Discard(ctx context.Context, instanceID, log string) error {
	defer m.lock(instanceID, log)()
	if err := m.removeParts(ctx, instanceID, log, ""); err != nil {
		return err
	}
	if err := m.Store.Delete(ctx, Key(Metafile(instanceID, log))); err != nil {
		return fmt.Errorf("object store: metafile: %w", err)
	}
	return nil
}

// DiscardInstance removes every published log of an instance (deleted).
func (m *Manager) DiscardInstance(ctx context.Context, instanceID string) error {
	objs, err := m.Store.List(ctx, Key(instanceID+"/"))
	if err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	for _, o := range objs {
		if err := m.Store.Delete(ctx, o.Name); err != nil {
			return fmt.Errorf("object store: %w", err)
		}
	}
	return nil
}

func (m *Manager) removeParts(ctx context.Context, instanceID, log, keep string) error {
	objs, err := m.Store.List(ctx, Key(Prefix(instanceID, log)))
	if err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	for _, o := range objs {
		if keep != "" && o.Name == Key(keep) {
			continue
		}
		if err := m.Store.Delete(ctx, o.Name); err != nil {
			return fmt.Errorf("object store: removing %s: %w", strings.TrimPrefix(o.Name, Root+"/"), err)
		}
	}
	return nil
}

func (m *Manager) streamTimeout() time.Duration {
	if m.StreamTimeout > 0 {
		return m.StreamTimeout
	}
	return time.Minute
}

// awaitStream waits for the agent to open the operation's stream; the
// operation failing first (unknown log, no file) ends the wait with the
// agent's error.
func (m *Manager) awaitStream(ctx context.Context, instanceID, opID string, wait *agentendpoint.StreamWait) (agentendpoint.Stream, error) {
	timeout := m.streamTimeout()
	st, err := wait.AwaitOrFail(ctx, timeout, 100*time.Millisecond, func(c context.Context) (wire.Result, bool, error) {
		return m.Agents.Result(c, instanceID, opID)
	})
	if errors.Is(err, agentendpoint.ErrNoStream) {
		return nil, fmt.Errorf("%w: the guest did not start sending the log within %s (is its agent connected?)", ErrGuestTimeout, timeout)
	}
	return st, err
}

// ErrDamaged: the log's bytes did not match the guest's digest.
var ErrDamaged = errors.New("the log arrived damaged or incomplete")

// ErrGuestTimeout: the guest did not answer in time.
var ErrGuestTimeout = errors.New("guest timeout")

func (m *Manager) awaitResult(ctx context.Context, instanceID, opID string) (wire.Result, error) {
	timeout := m.ResultTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		res, done, err := m.Agents.Result(ctx, instanceID, opID)
		if err != nil {
			return res, err
		}
		if done {
			return res, nil
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%w: the guest sent the log but no result within %s", ErrGuestTimeout, timeout)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
