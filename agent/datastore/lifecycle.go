package datastore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"strata/agent/wire"
)

// State is what a manager must remember across agent restarts: whether
// prepare ran (and how it ended), whether the server was stopped on
// request, and whether configuration waits for a restart.
type State struct {
	PrepareStarted  time.Time `json:"prepare_started,omitzero"`
	Prepared        bool      `json:"prepared"`
	PrepareError    string    `json:"prepare_error,omitempty"`
	Stopped         bool      `json:"stopped"`
	RestartRequired bool      `json:"restart_required"`
}

// Lifecycle keeps a manager's State in a root-only JSON file and answers
// the questions every manager asks the same way: may prepare run, is the
// datastore prepared, what is the status before the server is even
// asked. It is safe for concurrent use.
type Lifecycle struct {
	datastore string
	path      string

	mu        sync.Mutex
	state     State
	preparing bool
}

// LoadLifecycle reads the state file at path (missing: a fresh guest).
// datastore names the datastore in messages.
func LoadLifecycle(datastore, path string) (*Lifecycle, error) {
	l := &Lifecycle{datastore: datastore, path: path}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("%s: state: %w", datastore, err)
	default:
		if err := json.Unmarshal(data, &l.state); err != nil {
			return nil, fmt.Errorf("%s: state file %s is corrupt: %w", datastore, path, err)
		}
	}
	return l, nil
}

// State returns the current state and whether prepare is running.
func (l *Lifecycle) State() (State, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state, l.preparing
}

// Update changes the state and writes it out before returning.
func (l *Lifecycle) Update(f func(*State)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.state)
	data, _ := json.Marshal(l.state)
	if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
		return fmt.Errorf("%s: state: %w", l.datastore, err)
	}
	return WriteFileAtomic(l.path, data, 0o600)
}

// CheckCanPrepare fails with failed_precondition when prepare runs, ran,
// or was cut short: prepare runs once; a failed one means rebuild.
func (l *Lifecycle) CheckCanPrepare() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.checkCanPrepareLocked()
}

func (l *Lifecycle) checkCanPrepareLocked() error {
	switch {
	case l.preparing:
		return wire.Errorf(wire.CodeFailedPrecondition, "prepare is running already")
	case l.state.Prepared:
		return wire.Errorf(wire.CodeFailedPrecondition, "%s is prepared already", l.datastore)
	case !l.state.PrepareStarted.IsZero():
		return wire.Errorf(wire.CodeFailedPrecondition, "an earlier prepare (started %s) did not finish; rebuild the instance",
			l.state.PrepareStarted.Format(time.RFC3339))
	}
	return nil
}

// BeginPrepare marks prepare as running (in memory) and started (on
// disk). The caller must call EndPrepare.
func (l *Lifecycle) BeginPrepare() error {
	l.mu.Lock()
	if err := l.checkCanPrepareLocked(); err != nil {
		l.mu.Unlock()
		return err
	}
	l.preparing = true
	l.mu.Unlock()
	if err := l.Update(func(s *State) { s.PrepareStarted = time.Now().UTC() }); err != nil {
		l.mu.Lock()
		l.preparing = false
		l.mu.Unlock()
		return err
	}
	return nil
}

// EndPrepare records prepare's outcome: prepared, or the error that
// stopped it (the status then says failed, and prepare is not retried).
func (l *Lifecycle) EndPrepare(prepareErr error) error {
	defer func() {
		l.mu.Lock()
		l.preparing = false
		l.mu.Unlock()
	}()
	if prepareErr != nil {
		return l.Update(func(s *State) { s.PrepareError = prepareErr.Error() })
	}
	return l.Update(func(s *State) { s.Prepared, s.PrepareError = true, "" })
}

// RequirePrepared fails with failed_precondition before prepare finished.
func (l *Lifecycle) RequirePrepared() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.state.Prepared {
		return wire.Errorf(wire.CodeFailedPrecondition, "%s is not prepared yet", l.datastore)
	}
	return nil
}

// RequirePreparedOrPreparing is RequirePrepared that also lets prepare's
// own steps through.
func (l *Lifecycle) RequirePreparedOrPreparing() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.state.Prepared && !l.preparing {
		return wire.Errorf(wire.CodeFailedPrecondition, "%s is not prepared yet", l.datastore)
	}
	return nil
}

// EarlyStatus is the status when the server need not be asked (not
// prepared, preparing, prepare failed); ok is false once prepared.
func (l *Lifecycle) EarlyStatus() (st wire.StatusResult, ok bool) {
	s, preparing := l.State()
	switch {
	case preparing:
		return wire.StatusResult{Status: wire.StatusBuilding}, true
	case !s.Prepared && s.PrepareError != "":
		return wire.StatusResult{Status: wire.StatusFailed, Detail: "prepare failed: " + s.PrepareError}, true
	case !s.Prepared && !s.PrepareStarted.IsZero():
		return wire.StatusResult{Status: wire.StatusFailed, Detail: "prepare was interrupted at " + s.PrepareStarted.Format(time.RFC3339)}, true
	case !s.Prepared:
		return wire.StatusResult{Status: wire.StatusNew}, true
	}
	return wire.StatusResult{}, false
}

// ProcessStatus reads a server's status from its pid file once it does
// not answer, as Trove does: a live process → blocked, a pid file without
// a process → crashed, no pid file → shutdown.
func ProcessStatus(server, pidFile string, stoppedOnRequest bool) wire.StatusResult {
	pid, err := ReadPidFile(pidFile)
	switch {
	case err == nil && ProcessAlive(pid):
		return wire.StatusResult{Status: wire.StatusBlocked, Detail: fmt.Sprintf("%s (pid %d) runs but does not answer", server, pid)}
	case err == nil:
		return wire.StatusResult{Status: wire.StatusCrashed, Detail: fmt.Sprintf("pid file names %d, which is gone", pid)}
	case stoppedOnRequest:
		return wire.StatusResult{Status: wire.StatusShutdown, Detail: "stopped by request"}
	default:
		return wire.StatusResult{Status: wire.StatusShutdown, Detail: server + " is not running"}
	}
}
