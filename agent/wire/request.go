package wire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrNoReply: the peer did not answer a request in time.
var ErrNoReply = errors.New("no reply")

// Request sends the global request name on c, wanting a reply, and gives up
// after d (ErrNoReply) or when ctx ends. Both ends send hello, heartbeat and
// keepalive requests through it: the protocol's rule is that a peer which
// does not answer in time is treated as gone, and any reply, true or false,
// proves it alive.
func Request(ctx context.Context, c ssh.Conn, name string, payload []byte, d time.Duration) (ok bool, reply []byte, err error) {
	type answer struct {
		ok   bool
		data []byte
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		ok, data, err := c.SendRequest(name, true, payload)
		done <- answer{ok, data, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-done:
		return r.ok, r.data, r.err
	case <-t.C:
		return false, nil, fmt.Errorf("%s: %w after %s", name, ErrNoReply, d)
	case <-ctx.Done():
		return false, nil, ctx.Err()
	}
}
