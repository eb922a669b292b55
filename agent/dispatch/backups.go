package dispatch

import (
	"context"
	"fmt"
	"io"

	"strata/agent/datastore"
	"strata/agent/streams"
	"strata/agent/wire"
)

// Stream is an operation's data channel (transport.Stream).
type Stream interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// Streams opens an operation's data channels (transport.Client).
type Streams interface {
	OpenStream(ctx context.Context, opID string, index int) (Stream, error)
}

func (d *Dispatcher) datastoreName() string {
	if d.Datastore != "" {
		return d.Datastore
	}
	return "this datastore"
}

// backup runs the manager's backup into stream 0 of the operation,
// compressed, and reports the digest of what it sent. On any failure the
// channel is closed without EOF's companion result, and the controller
// discards what it received.
func (d *Dispatcher) backup(ctx context.Context, opID string, a wire.BackupArgs) (any, error) {
	b, ok := d.Manager.(datastore.Backuper)
	if !ok {
		return nil, wire.Errorf(wire.CodeNotSupported, "%s does not support backups", d.datastoreName())
	}
	if err := a.Validate(); err != nil {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "backup: %v", err)
	}
	if d.Streams == nil {
		return nil, wire.Errorf(wire.CodeFailedPrecondition, "backup: this agent has no data channel to the controller")
	}
	st, err := d.Streams.OpenStream(ctx, opID, 0)
	if err != nil {
		return nil, wire.Errorf(wire.CodeUnavailable, "backup: %v", err)
	}
	defer st.Close()
	send, err := streams.NewSender(st)
	if err != nil {
		return nil, err
	}
	info, err := b.Backup(ctx, a, send)
	if err == nil {
		err = send.Close()
	} else {
		send.Close()
	}
	if err == nil {
		if err = st.CloseWrite(); err != nil {
			err = fmt.Errorf("backup: ending the stream: %w", err)
		}
	}
	if err != nil {
		return nil, err
	}
	return wire.BackupResult{Stream: send.Digest(), RawBytes: send.RawBytes(), Compression: wire.CompressionZstd,
		Position: info.Position, ServerVersion: info.ServerVersion}, nil
}

// restore runs the manager's restore over the operation's streams, one
// per link of the chain, each checked against its digest.
func (d *Dispatcher) restore(ctx context.Context, opID string, a wire.RestoreArgs) (any, error) {
	r, ok := d.Manager.(datastore.Restorer)
	if !ok {
		return nil, wire.Errorf(wire.CodeNotSupported, "%s does not support restoring backups", d.datastoreName())
	}
	if err := a.Validate(); err != nil {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "restore: %v", err)
	}
	if d.Streams == nil {
		return nil, wire.Errorf(wire.CodeFailedPrecondition, "restore: this agent has no data channel to the controller")
	}
	opened := make([]*streams.Receiver, len(a.Chain))
	next := 0
	chain := func(ctx context.Context, i int) (io.ReadCloser, error) {
		if i != next {
			return nil, fmt.Errorf("restore: link %d opened out of order (want %d)", i, next)
		}
		st, err := d.Streams.OpenStream(ctx, opID, i)
		if err != nil {
			return nil, wire.Errorf(wire.CodeUnavailable, "restore: backup %s: %v", a.Chain[i].BackupID, err)
		}
		rc, err := streams.NewReceiver(st, a.Chain[i].Stream)
		if err != nil {
			st.Close()
			return nil, err
		}
		opened[i] = rc
		next++
		return &named{rc, a.Chain[i].BackupID}, nil
	}
	res, err := r.Restore(ctx, a, chain)
	for _, rc := range opened {
		if rc != nil {
			rc.Close()
		}
	}
	if err != nil {
		return nil, err
	}
	// A restorer that returned success must have taken every link whole.
	for i, rc := range opened {
		if rc == nil || !rc.Verified() {
			return nil, wire.Errorf(wire.CodeInternal, "restore: backup %s (link %d) was not read whole; the restore is not trusted", a.Chain[i].BackupID, i)
		}
	}
	return res, nil
}

// named puts the backup's id into a restore stream's errors.
type named struct {
	r  io.ReadCloser
	id string
}

func (n *named) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("backup %s: %w", n.id, err)
	}
	return k, err
}

func (n *named) Close() error {
	if err := n.r.Close(); err != nil {
		return fmt.Errorf("backup %s: %w", n.id, err)
	}
	return nil
}
