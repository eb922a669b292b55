package streams

import (
	"errors"
	"io"
	"sync"
)

// readahead reads from r in a goroutine of its own, up to n buffers
// ahead, so that waiting on the source overlaps what the reader does
// with the data (and memory stays bounded by n buffers).
type readahead struct {
	full    chan chunk
	free    chan []byte
	done    chan struct{}
	stopped sync.Once
	exited  chan struct{}
	cur     []byte
	buf     []byte
	err     error
}

type chunk struct {
	buf []byte // the whole buffer, to recycle
	n   int
	err error
}

// newReadahead hands out what each Read of r returned (a network
// stream: what arrived is passed on at once). With fill, each buffer is
// filled whole before it is passed on (a tool's pipe, which returns at
// most its 64 KiB capacity a read: the consumer gets large writes and the
// tool a deep buffer to run ahead into).
func newReadahead(r io.Reader, n, size int, fill bool) *readahead {
	ra := &readahead{full: make(chan chunk, n), free: make(chan []byte, n), done: make(chan struct{}), exited: make(chan struct{})}
	for range n {
		ra.free <- make([]byte, size)
	}
	go func() {
		defer close(ra.exited)
		for {
			var buf []byte
			select {
			case buf = <-ra.free:
			case <-ra.done:
				return
			}
			var k int
			var err error
			if fill {
				k, err = io.ReadFull(r, buf)
				if errors.Is(err, io.ErrUnexpectedEOF) {
					err = io.EOF
				}
			} else {
				k, err = r.Read(buf)
			}
			select {
			case ra.full <- chunk{buf: buf, n: k, err: err}:
			case <-ra.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ra
}

// next makes the next chunk current; false at the source's end or error
// (ra.err).
func (ra *readahead) next() bool {
	for len(ra.cur) == 0 {
		if ra.buf != nil {
			ra.free <- ra.buf
			ra.buf = nil
		}
		if ra.err != nil {
			return false
		}
		c := <-ra.full
		ra.buf, ra.cur, ra.err = c.buf, c.buf[:c.n], c.err
	}
	return true
}

func (ra *readahead) Read(p []byte) (int, error) {
	if !ra.next() {
		return 0, ra.err
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// WriteTo hands each buffer to w as it is (io.Copy uses it: no copy
// into a buffer of its own).
func (ra *readahead) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for ra.next() {
		n, err := w.Write(ra.cur)
		total += int64(n)
		ra.cur = ra.cur[n:]
		if err != nil {
			return total, err
		}
	}
	if ra.err == io.EOF {
		return total, nil
	}
	return total, ra.err
}

// stop ends the reading goroutine once its current read returns (closing
// the source makes that happen).
func (ra *readahead) stop() {
	ra.stopped.Do(func() { close(ra.done) })
}

// ReadAhead reads a tool's output (a pipe) in a goroutine of its own, n
// buffers of size bytes ahead, so the tool never waits while the caller
// compresses and sends; io.Copy from it writes whole buffers. Stop it
// once done with it; it returns when no Read of r runs any more (closing
// r, or the writing end of its pipe, ends one that is waiting).
type ReadAhead struct{ ra *readahead }

// NewReadAhead starts reading r.
func NewReadAhead(r io.Reader, n, size int) *ReadAhead {
	return &ReadAhead{newReadahead(r, n, size, true)}
}

func (r *ReadAhead) Read(p []byte) (int, error)         { return r.ra.Read(p) }
func (r *ReadAhead) WriteTo(w io.Writer) (int64, error) { return r.ra.WriteTo(w) }

// Stop ends the reading goroutine and waits for it.
func (r *ReadAhead) Stop() {
	r.ra.stop()
	<-r.ra.exited
}
