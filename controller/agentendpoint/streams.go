package agentendpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
)

// Stream is an operation's data channel as the controller holds it: what
// the agent wrote is read from it, what is written goes to the agent,
// CloseWrite sends EOF, Close ends it both ways (and so aborts the
// operation on the agent's side).
type Stream interface {
	io.ReadWriteCloser
	CloseWrite() error
}

type streamKey struct {
	instance, op string
	index        int
}

// StreamWait is the controller's promise to accept one data channel
// (wire.ChannelStream) from one instance's agent for one stream of one
// operation. Until it is registered, and after it took its channel or was
// closed, such a channel is rejected: an agent can only send or fetch the
// data of an operation the controller asked it to run, once.
type StreamWait struct {
	srv *Server
	key streamKey

	arrived chan Stream
	closed  chan struct{}

	mu       sync.Mutex
	isClosed bool
}

// ErrStreamClosed: the wait was closed before the agent opened its stream.
var ErrStreamClosed = errors.New("stream wait closed")

// ExpectStream registers that instanceID's agent will open stream index
// of operation opID. Register before submitting the operation, and Close
// the wait when done with it (whether or not the stream came).
func (s *Server) ExpectStream(instanceID, opID string, index int) (*StreamWait, error) {
	open := wire.StreamOpen{OpID: opID, Index: index}
	if err := open.Validate(); err != nil {
		return nil, err
	}
	w := &StreamWait{srv: s, key: streamKey{instanceID, opID, index}, arrived: make(chan Stream, 1), closed: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.streams[w.key]; dup {
		return nil, fmt.Errorf("stream %d of %s on %s is awaited already", index, opID, instanceID)
	}
	s.streams[w.key] = w
	return w, nil
}

// Wait returns the stream once the agent opened it, or fails when ctx
// ends or the wait is closed.
func (w *StreamWait) Wait(ctx context.Context) (Stream, error) {
	select {
	case st := <-w.arrived:
		return st, nil
	case <-w.closed:
		return nil, ErrStreamClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ErrNoStream: the agent did not open the stream in time.
var ErrNoStream = errors.New("the guest did not open its stream in time")

// AwaitOrFail waits up to timeout for the stream, asking every poll for
// the operation's result: an operation that fails before it streams
// (unknown name, not supported, refused) ends the wait with its
// *wire.OpError. The other errors are ErrNoStream after timeout and ctx's
// own when ctx ends.
func (w *StreamWait) AwaitOrFail(ctx context.Context, timeout, poll time.Duration, result func(context.Context) (wire.Result, bool, error)) (Stream, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type arrival struct {
		st  Stream
		err error
	}
	got := make(chan arrival, 1)
	go func() {
		st, err := w.Wait(wctx)
		got <- arrival{st, err}
	}()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case a := <-got:
			switch {
			case a.err == nil:
				return a.st, nil
			case ctx.Err() != nil:
				return nil, ctx.Err()
			case errors.Is(a.err, context.DeadlineExceeded):
				return nil, ErrNoStream
			default:
				return nil, a.err
			}
		case <-tick.C:
			res, done, err := result(wctx)
			if err == nil && done && res.Error != nil {
				cancel()
				if a := <-got; a.err == nil {
					a.st.Close()
				}
				return nil, res.Error
			}
		}
	}
}

// Close withdraws the wait: a stream opened later is rejected, and one
// that arrived but was never taken by Wait is closed.
func (w *StreamWait) Close() {
	w.srv.mu.Lock()
	if w.srv.streams[w.key] == w {
		delete(w.srv.streams, w.key)
	}
	w.srv.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.isClosed {
		return
	}
	w.isClosed = true
	close(w.closed)
	select {
	case st := <-w.arrived:
		st.Close()
	default:
	}
}

// deliver hands an accepted channel to the wait, or closes it if the wait
// was closed meanwhile.
func (w *StreamWait) deliver(ch Stream) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.isClosed {
		ch.Close()
		return
	}
	w.arrived <- ch
}

// acceptStream takes an agent's stream channel if, and only if, a wait
// for exactly that instance, operation and index is registered; the wait
// is consumed, so a second open is rejected.
func (s *Server) acceptStream(sess *session, nch ssh.NewChannel, log *slog.Logger) {
	var open wire.StreamOpen
	if len(nch.ExtraData()) > 4096 {
		nch.Reject(ssh.Prohibited, "stream open too large")
		return
	}
	err := wire.DecodeStrict(nch.ExtraData(), &open)
	if err != nil {
		err = fmt.Errorf("garbled stream open: %w", err)
	} else {
		err = open.Validate()
	}
	if err != nil {
		log.Warn("stream refused", "err", err)
		nch.Reject(ssh.Prohibited, err.Error())
		return
	}
	select {
	case <-sess.ready:
	default:
		nch.Reject(ssh.Prohibited, "hello first")
		return
	}
	key := streamKey{sess.instanceID, open.OpID, open.Index}
	s.mu.Lock()
	w := s.streams[key]
	delete(s.streams, key)
	s.mu.Unlock()
	if w == nil {
		log.Warn("agent opened a stream nobody waits for; rejected", "op", open.OpID, "index", open.Index)
		nch.Reject(ssh.Prohibited, fmt.Sprintf("no stream %d of operation %s is expected from this instance", open.Index, open.OpID))
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		log.Warn("accepting a stream failed", "op", open.OpID, "err", err)
		return
	}
	go ssh.DiscardRequests(reqs)
	log.Info("stream opened", "op", open.OpID, "index", open.Index)
	w.deliver(ch)
}
