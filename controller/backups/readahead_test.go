package backups

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// slowSource is a reader that is not safe for concurrent use (as the
// container's reader is not): it records whether a Read is under way.
type slowSource struct{ reading, reads atomic.Int32 }

func (s *slowSource) Read(p []byte) (int, error) {
	s.reading.Add(1)
	defer s.reading.Add(-1)
	s.reads.Add(1)
	time.Sleep(50 * time.Millisecond)
	return len(p), nil
}

// refusingStream is an agent that has gone: every Write fails.
type refusingStream struct{}

var errGone = errors.New("write: broken pipe")

func (refusingStream) Read([]byte) (int, error)  { return 0, errGone }
func (refusingStream) Write([]byte) (int, error) { return 0, errGone }
func (refusingStream) Close() error              { return nil }
func (refusingStream) CloseWrite() error         { return nil }

// The restore closes the container's reader as soon as SendStream
// returns (a failed send, the agent gone): the read-ahead must have
// stopped reading it by then, or the close races a Read (the race
// detector found it in the API's restore-refusal test).
func TestSendStreamLeavesNoReadOfTheSourceRunning(t *testing.T) {
	for range 5 {
		src := &slowSource{}
		if err := SendStream(refusingStream{}, src); !errors.Is(err, errGone) {
			t.Fatalf("SendStream to a gone agent: %v", err)
		}
		if n := src.reading.Load(); n != 0 {
			t.Fatalf("SendStream returned with %d Read(s) of the source still running", n)
		}
		if src.reads.Load() == 0 {
			t.Fatal("the source was never read")
		}
	}
}
