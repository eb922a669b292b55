package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxMessageSize caps one frame's body. Everything the agent returns is
// bounded well below it (log tails, listings).
const MaxMessageSize = 1 << 20

// ErrMessageTooLarge is returned for a frame whose declared length exceeds
// the cap. The body is not read: the stream is unusable afterwards and the
// caller must close it.
var ErrMessageTooLarge = errors.New("message too large")

// WriteFrame marshals v and writes it as one frame.
func WriteFrame(w io.Writer, v any, max int) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	if len(body) > max {
		return fmt.Errorf("encode frame: %d bytes: %w (limit %d)", len(body), ErrMessageTooLarge, max)
	}
	buf := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame body of at most max bytes.
func ReadFrame(r io.Reader, max int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("frame of %d bytes: %w (limit %d)", n, ErrMessageTooLarge, max)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("read frame body (%d bytes): %w", n, err)
	}
	return body, nil
}
