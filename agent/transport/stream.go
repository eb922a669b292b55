package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
)

// Stream is an operation's data channel: what it writes goes to the
// controller, CloseWrite sends EOF, Close ends it both ways.
type Stream interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// ErrStreamRefused: the controller did not accept the stream (it is not
// waiting for this operation's stream, or took it already).
var ErrStreamRefused = errors.New("controller refused the data stream")

// StreamWait bounds how long OpenStream waits for a session when the
// agent is between connections.
const StreamWait = 30 * time.Second

func (c *Client) setConn(conn ssh.Conn) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	c.conn = conn
	if conn != nil {
		close(c.connected)
		c.connected = make(chan struct{})
	}
}

// OpenStream opens the data channel for stream index of the operation
// opID (wire.ChannelStream) on the current session, waiting up to
// StreamWait (or until ctx ends) for one if the agent is reconnecting.
func (c *Client) OpenStream(ctx context.Context, opID string, index int) (Stream, error) {
	open := wire.StreamOpen{OpID: opID, Index: index}
	if err := open.Validate(); err != nil {
		return nil, err
	}
	extra, _ := json.Marshal(open)
	deadline := time.NewTimer(StreamWait)
	defer deadline.Stop()
	for {
		c.connMu.Lock()
		conn, wait := c.conn, c.connected
		c.connMu.Unlock()
		if conn != nil {
			ch, reqs, err := conn.OpenChannel(wire.ChannelStream, extra)
			if err != nil {
				var oce *ssh.OpenChannelError
				if errors.As(err, &oce) {
					return nil, fmt.Errorf("%w: stream %d of %s: %s", ErrStreamRefused, index, opID, oce.Message)
				}
				return nil, fmt.Errorf("open stream %d of %s: %w", index, opID, err)
			}
			go ssh.DiscardRequests(reqs)
			return ch, nil
		}
		select {
		case <-wait:
		case <-deadline.C:
			return nil, fmt.Errorf("open stream %d of %s: not connected to the controller for %s", index, opID, StreamWait)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
