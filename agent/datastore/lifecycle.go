package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"strata/agent/chaos"
	"strata/agent/wire"
)

// State is what a manager must remember across agent restarts: whether
// prepare ran (and how it ended, or how far an interrupted one got),
// whether the server was stopped on request, and whether configuration
// waits for a restart.
type State struct {
	PrepareStarted time.Time `json:"prepare_started,omitzero"`
	Prepared       bool      `json:"prepared"`
	PrepareError   string    `json:"prepare_error,omitempty"`
	// DataDirInitStarted: this prepare began initialising the data
	// directory; DataDirInitialized: it finished (and the files are on
	// disk). A resumed prepare redoes a half-done initialisation and skips
	// a finished one.
	DataDirInitStarted bool `json:"datadir_init_started,omitempty"`
	DataDirInitialized bool `json:"datadir_initialized,omitempty"`
	Stopped            bool `json:"stopped"`
	RestartRequired    bool `json:"restart_required"`
	// AuthPlugin is the authentication plugin prepare (or restore) was
	// given for the accounts the manager creates (wire.PrepareArgs); empty
	// is the manager's default.
	AuthPlugin string `json:"auth_plugin,omitempty"`
}

// Lifecycle keeps a manager's State in a root-only JSON file and takes the
// steps every manager takes the same way: prepare at most once, refuse
// operations before prepare, read the status, restart and stop. It is safe
// for concurrent use.
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

// Prepare runs a manager's prepare, the same way in every manager, until
// it succeeds once. It fails with failed_precondition when prepare runs,
// ran, or failed (a failed prepare means rebuild). One that was cut short
// (the agent or the VM stopped) runs again when asked: each of its steps
// converges on what the data volume holds (format only if blank,
// initialise only what is not initialised — redoing a half-done
// initialisation — create only what is missing). check validates (and
// may normalise) the arguments and must change nothing; then the start is
// recorded, prepare runs, and its outcome is recorded (the status then
// says failed, or the datastore is prepared). A failure is logged.
func (l *Lifecycle) Prepare(ctx context.Context, log *slog.Logger, args wire.PrepareArgs,
	check func(*wire.PrepareArgs) ([]Setting, error),
	prepare func(context.Context, wire.PrepareArgs, []Setting) (wire.PrepareResult, error),
) (wire.PrepareResult, error) {
	if err := l.checkCanPrepare(); err != nil {
		return wire.PrepareResult{}, err
	}
	settings, err := check(&args)
	if err != nil {
		return wire.PrepareResult{}, err
	}
	var res wire.PrepareResult
	err = l.once(log, "prepare", func() (err error) {
		res, err = prepare(ctx, args, settings)
		return err
	})
	return res, err
}

// Restore is Prepare for a guest made from backups: the same at-most-once
// record (a failed or interrupted restore leaves the status failed and a
// second prepare or restore refused), with check validating the
// arguments before anything happens.
func (l *Lifecycle) Restore(ctx context.Context, log *slog.Logger, args wire.RestoreArgs,
	check func(*wire.RestoreArgs) ([]Setting, error),
	restore func(context.Context, wire.RestoreArgs, []Setting) (wire.RestoreResult, error),
) (wire.RestoreResult, error) {
	if err := l.checkCanPrepare(); err != nil {
		return wire.RestoreResult{}, err
	}
	settings, err := check(&args)
	if err != nil {
		return wire.RestoreResult{}, err
	}
	var res wire.RestoreResult
	err = l.once(log, "restore", func() (err error) {
		res, err = restore(ctx, args, settings)
		return err
	})
	return res, err
}

// once records the start of prepare (or restore), runs it, and records
// how it ended.
func (l *Lifecycle) once(log *slog.Logger, what string, run func() error) error {
	if err := l.beginPrepare(); err != nil {
		return err
	}
	err := run()
	if err != nil {
		log.Error(what+" failed", "err", err)
	}
	if serr := l.endPrepare(err); serr != nil {
		if err != nil {
			log.Error("recording "+what+" failure", "err", serr)
			return err
		}
		return serr
	}
	return err
}

func (l *Lifecycle) checkCanPrepare() error {
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
	case l.state.PrepareError != "":
		return wire.Errorf(wire.CodeFailedPrecondition, "an earlier prepare (started %s) failed: %s; rebuild the instance",
			l.state.PrepareStarted.Format(time.RFC3339), l.state.PrepareError)
	}
	return nil
}

// Resuming reports whether prepare was cut short before and has not
// finished since: its next run resumes it.
func (l *Lifecycle) Resuming() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.state.Prepared && l.state.PrepareError == "" && !l.state.PrepareStarted.IsZero()
}

// InitDataDir initialises the data directory dir through init, within
// prepare: not when it holds a database already (exists; an instance
// rebuilt onto its old volume keeps it) unless this prepare itself began
// that initialisation and was cut short, and not again when this prepare
// finished it before it was cut short. It reports whether the directory
// is fresh (initialised by this prepare, now or before), in which case
// prepare creates the initial databases and users. The initialised files
// are synced to disk before that is recorded.
func (l *Lifecycle) InitDataDir(log *slog.Logger, dir string, exists func() bool, init func() error) (fresh bool, err error) {
	st, _ := l.State()
	if st.DataDirInitialized {
		log.Info("data directory initialised by this prepare before it was cut short; keeping it", "datadir", dir)
		return true, nil
	}
	if exists() {
		if !st.DataDirInitStarted {
			log.Info("data directory holds a database already; keeping it", "datadir", dir)
			return false, nil
		}
		log.Warn("data directory half initialised by a prepare that was cut short; initialising it again", "datadir", dir)
		if err := emptyDir(dir); err != nil {
			return false, fmt.Errorf("data directory: %w", err)
		}
	}
	if err := l.Update(func(s *State) { s.DataDirInitStarted = true }); err != nil {
		return false, err
	}
	if err := init(); err != nil {
		return false, err
	}
	chaos.Point(wire.GuestPointPrefix + "prepare.datadir")
	if err := SyncFS(dir); err != nil {
		return false, err
	}
	return true, l.Update(func(s *State) { s.DataDirInitialized = true })
}

// emptyDir removes what dir holds, keeping dir (its owner and mode).
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// beginPrepare marks prepare as running (in memory) and started (on
// disk). The caller must call endPrepare.
func (l *Lifecycle) beginPrepare() error {
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

// endPrepare records prepare's outcome: prepared, or the error that
// stopped it (the status then says failed, and prepare is not retried).
func (l *Lifecycle) endPrepare(prepareErr error) error {
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

// ApplyInitialConfiguration applies prepare's configuration group with
// apply (nothing to do without settings) and, when part of it waits for a
// restart, restarts the server through svc at once and waits for it
// (waitReady): a new instance starts with its whole group.
func (l *Lifecycle) ApplyInitialConfiguration(ctx context.Context, settings []Setting,
	apply func(context.Context, []Setting) (wire.ConfigurationResult, error),
	svc Service, waitReady func(context.Context) error,
) error {
	if len(settings) == 0 {
		return nil
	}
	res, err := apply(ctx, settings)
	if err != nil || !res.RestartRequired {
		return err
	}
	if err := svc.Restart(ctx); err != nil {
		return fmt.Errorf("restart for configuration: %w", err)
	}
	if err := waitReady(ctx); err != nil {
		return err
	}
	return l.Update(func(s *State) { s.RestartRequired = false })
}

// RecordPendingRestart records that a configuration change left
// parameters waiting for a restart (pending) and reports whether any wait,
// from this change or an earlier one.
func (l *Lifecycle) RecordPendingRestart(pending bool) (restartRequired bool, err error) {
	err = l.Update(func(s *State) {
		s.RestartRequired = s.RestartRequired || pending
		restartRequired = s.RestartRequired
	})
	return restartRequired, err
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

// Ready fails with failed_precondition before prepare (prepare's own
// steps pass) and with unavailable when the server does not answer ping.
func (l *Lifecycle) Ready(ctx context.Context, ping func(context.Context) error) error {
	l.mu.Lock()
	waiting := !l.state.Prepared && !l.preparing
	l.mu.Unlock()
	if waiting {
		return wire.Errorf(wire.CodeFailedPrecondition, "%s is not prepared yet", l.datastore)
	}
	if err := ping(ctx); err != nil {
		return wire.Errorf(wire.CodeUnavailable, "%s does not answer: %v", l.datastore, err)
	}
	return nil
}

// Restart restarts the server through svc, waits until it answers
// (waitReady) and clears the restart-required and stopped flags. Before
// prepare it fails with failed_precondition.
func (l *Lifecycle) Restart(ctx context.Context, svc Service, waitReady func(context.Context) error) error {
	if err := l.RequirePrepared(); err != nil {
		return err
	}
	if err := svc.Restart(ctx); err != nil {
		return fmt.Errorf("restart %s: %w", l.datastore, err)
	}
	if err := waitReady(ctx); err != nil {
		return err
	}
	return l.Update(func(s *State) { s.RestartRequired, s.Stopped = false, false })
}

// Stop records that the server is stopped on request (its status is then
// shutdown, not crashed) and stops it through svc. Before prepare it fails
// with failed_precondition.
func (l *Lifecycle) Stop(ctx context.Context, svc Service) error {
	if err := l.RequirePrepared(); err != nil {
		return err
	}
	if err := l.Update(func(s *State) { s.Stopped = true }); err != nil {
		return err
	}
	if err := svc.Stop(ctx); err != nil {
		return fmt.Errorf("stop %s: %w", l.datastore, err)
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
		// Cut short: it resumes when the controller sends it again.
		return wire.StatusResult{Status: wire.StatusBuilding, Detail: "prepare (started " + s.PrepareStarted.Format(time.RFC3339) + ") was cut short; it resumes when the controller runs it again"}, true
	case !s.Prepared:
		return wire.StatusResult{Status: wire.StatusNew}, true
	}
	return wire.StatusResult{}, false
}

// Status follows Trove's reading: EarlyStatus until prepared; then a
// server that answers ping is running (or restart_required); one that
// does not has the status of its pid file (ProcessStatus), and a blocked
// one says why ping failed.
func (l *Lifecycle) Status(ctx context.Context, server, pidFile string, ping func(context.Context) error) wire.StatusResult {
	if st, ok := l.EarlyStatus(); ok {
		return st
	}
	st, _ := l.State()
	err := ping(ctx)
	if err == nil {
		if st.RestartRequired {
			return wire.StatusResult{Status: wire.StatusRestartRequired, Detail: "configuration changes wait for a restart"}
		}
		return wire.StatusResult{Status: wire.StatusRunning}
	}
	res := ProcessStatus(server, pidFile, st.Stopped)
	if res.Status == wire.StatusBlocked {
		res.Detail += ": " + err.Error()
	}
	return res
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

// CreateMissingDatabases creates those of dbs that do not exist: what an
// interrupted creation, run again, converges on (the interrupted run may
// have made some of them).
func CreateMissingDatabases(ctx context.Context, m Manager, dbs []wire.Database) error {
	if len(dbs) == 0 {
		return nil
	}
	have, err := m.ListDatabases(ctx)
	if err != nil {
		return err
	}
	exists := map[string]bool{}
	for _, d := range have {
		exists[d.Name] = true
	}
	var missing []wire.Database
	for _, d := range dbs {
		if !exists[d.Name] {
			missing = append(missing, d)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return m.CreateDatabases(ctx, missing)
}

// CreateMissingUsers creates those of users that do not exist; one that
// does (made by the interrupted run, which may have stopped between the
// account and its grants) is given access to its databases again.
func CreateMissingUsers(ctx context.Context, m Manager, users []wire.User) error {
	if len(users) == 0 {
		return nil
	}
	have, err := m.ListUsers(ctx)
	if err != nil {
		return err
	}
	host := func(h string) string {
		if h == "" {
			return "%"
		}
		return h
	}
	exists := map[string]bool{}
	for _, u := range have {
		exists[u.Name+"@"+host(u.Host)] = true
	}
	var missing []wire.User
	for _, u := range users {
		if !exists[u.Name+"@"+host(u.Host)] {
			missing = append(missing, u)
			continue
		}
		if len(u.Databases) > 0 {
			if err := m.GrantAccess(ctx, wire.UserRef{Name: u.Name, Host: u.Host}, u.Databases); err != nil {
				return err
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return m.CreateUsers(ctx, missing)
}
