package backups

import "io"

// readahead reads from r in a goroutine of its own, up to n buffers
// ahead, so that waiting on the network overlaps decompressing and
// writing (and memory stays bounded by n buffers).
type readahead struct {
	full chan chunk
	free chan []byte
	done chan struct{}
	// exited is closed when the reading goroutine has returned: after
	// that nothing touches r any more.
	exited chan struct{}
	cur    []byte
	buf    []byte
	err    error
}

type chunk struct {
	buf []byte // the whole buffer, to recycle
	n   int
	err error
}

func newReadahead(r io.Reader, n, size int) *readahead {
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
			k, err := r.Read(buf)
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

func (ra *readahead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.buf != nil {
			ra.free <- ra.buf
			ra.buf = nil
		}
		if ra.err != nil {
			return 0, ra.err
		}
		c := <-ra.full
		ra.buf, ra.cur, ra.err = c.buf, c.buf[:c.n], c.err
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// stop ends the reading goroutine once its current read returns (closing
// the source makes that happen).
func (ra *readahead) stop() {
	select {
	case <-ra.done:
	default:
		close(ra.done)
	}
}

// stopWait is stop, then waits until the reading goroutine has returned,
// so that the caller may close or reuse r (a source that is not safe for
// concurrent use, such as the container's reader). The wait is one Read
// of r at most.
func (ra *readahead) stopWait() {
	ra.stop()
	<-ra.exited
}
