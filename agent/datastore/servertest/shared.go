package servertest

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Shared is the one prepared server that a test package's tests share
// when they only need it running; tests that stop, kill or re-prepare a
// server start their own. The first test that asks starts it; TestMain
// runs the tests through Run, which closes it after them.
type Shared[I interface{ Close() }] struct {
	once sync.Once
	inst I
	err  error
	dir  string
}

// Get returns the shared server, starting it on first use: start lays it
// out in dir, a new temporary directory named after pattern, and prepares
// it; when it fails it leaves nothing running. name says which server in
// t's failure.
func (s *Shared[I]) Get(t testing.TB, name, pattern string, start func(dir string) (I, error)) I {
	t.Helper()
	s.once.Do(func() {
		if s.dir, s.err = os.MkdirTemp("", pattern); s.err != nil {
			return
		}
		// Reachable by a server that runs as another account.
		if s.err = os.Chmod(s.dir, 0o755); s.err != nil {
			return
		}
		s.inst, s.err = start(s.dir)
	})
	if s.err != nil {
		t.Fatalf("shared %s: %v", name, s.err)
	}
	return s.inst
}

// Run runs the tests, then closes the shared server (if one started) and
// removes its directory. It returns m.Run's exit code.
func (s *Shared[I]) Run(m *testing.M) int {
	code := m.Run()
	if s.dir != "" {
		if s.err == nil {
			s.inst.Close()
		}
		os.RemoveAll(s.dir)
	}
	return code
}

// Prepare runs m.Prepare(args), bounded by timeout.
func Prepare(m datastore.Manager, args wire.PrepareArgs, timeout time.Duration) (wire.PrepareResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return m.Prepare(ctx, args)
}

// MustPrepare is Prepare that fails t when prepare fails.
func MustPrepare(t testing.TB, m datastore.Manager, args wire.PrepareArgs, timeout time.Duration) wire.PrepareResult {
	t.Helper()
	res, err := Prepare(m, args, timeout)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	return res
}
