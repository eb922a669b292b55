package redis

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The agent speaks RESP2 itself: it needs a dozen commands (AUTH, PING,
// CONFIG, ACL, INFO), every argument travels as a length-prefixed bulk
// string (nothing is ever quoted or escaped), and the static agent binary
// stays free of a client library.

// ServerError is an error reply ("-ERR ...") from the server.
type ServerError struct{ Message string }

func (e *ServerError) Error() string { return "redis: " + e.Message }

// Reply is a decoded RESP2 reply: a string (simple or bulk), an integer,
// nil (null bulk or array), or an array of replies.
type Reply struct {
	Str   string
	Int   int64
	Array []Reply
	Kind  byte // '+', ':', '$', '*', or 0 for nil
}

// Strings returns an array reply's elements as strings.
func (r Reply) Strings() []string {
	out := make([]string, len(r.Array))
	for i, e := range r.Array {
		out[i] = e.Str
	}
	return out
}

// Conn is one connection to a server.
type Conn struct {
	nc net.Conn
	r  *bufio.Reader
	w  *bufio.Writer
	// Timeout bounds each command (default 10 s).
	Timeout time.Duration
}

// Dial connects to a unix socket path (starting with /) or a host:port.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &Conn{nc: nc, r: bufio.NewReader(nc), w: bufio.NewWriter(nc), Timeout: 10 * time.Second}, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Do sends one command and reads its reply. An error reply is a
// *ServerError (the connection stays usable); any other error means the
// connection is broken.
func (c *Conn) Do(ctx context.Context, args ...string) (Reply, error) {
	deadline := time.Now().Add(c.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.nc.SetDeadline(deadline)
	fmt.Fprintf(c.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.w, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := c.w.Flush(); err != nil {
		return Reply{}, err
	}
	return c.read(0)
}

// maxBulk bounds one bulk reply (INFO and CONFIG GET are small).
const maxBulk = 64 << 20

func (c *Conn) read(depth int) (Reply, error) {
	if depth > 8 {
		return Reply{}, errors.New("redis: reply nested too deeply")
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return Reply{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return Reply{}, fmt.Errorf("redis: malformed reply line %q", truncate(line))
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return Reply{Kind: '+', Str: body}, nil
	case '-':
		return Reply{}, &ServerError{Message: body}
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return Reply{}, fmt.Errorf("redis: bad integer reply %q", truncate(body))
		}
		return Reply{Kind: ':', Int: n}, nil
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxBulk {
			return Reply{}, fmt.Errorf("redis: bad bulk length %q", truncate(body))
		}
		if n == -1 {
			return Reply{}, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return Reply{}, err
		}
		return Reply{Kind: '$', Str: string(buf[:n])}, nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > 1<<20 {
			return Reply{}, fmt.Errorf("redis: bad array length %q", truncate(body))
		}
		if n == -1 {
			return Reply{}, nil
		}
		out := Reply{Kind: '*', Array: make([]Reply, 0, n)}
		for range n {
			e, err := c.read(depth + 1)
			var se *ServerError
			if errors.As(err, &se) {
				// An error inside an array (EXEC) is an element here.
				e = Reply{Kind: '-', Str: se.Message}
			} else if err != nil {
				return Reply{}, err
			}
			out.Array = append(out.Array, e)
		}
		return out, nil
	}
	return Reply{}, fmt.Errorf("redis: unknown reply type %q", kind)
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}
