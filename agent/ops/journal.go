// Package ops gives the agent's operations their at-most-once guarantee: a
// journal on disk records each run of an operation as started before it
// runs and its result after, each record fsync'd, and the executor
// consults it so a resent operation is answered, never run twice. A run
// cut short by a crash is reported interrupted; only the controller may
// ask for another run (a higher Operation.Attempt), and only of an
// operation that ended interrupted or unavailable (wire.Rerunnable).
//
// ops knows nothing about datastores or transport: it runs a function it is
// given and stores what comes back. It must not decide what an operation
// means.
package ops

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"strata/agent/wire"
)

// Journal is an append-only file of JSON records, one per line:
// {"op":..,"state":"started"} then {"op":..,"state":"done","result":..}.
type Journal struct {
	path string
	keep int

	mu            sync.Mutex
	f             *os.File
	entries       map[string]*Entry
	order         []string
	lastCompleted string
	interrupted   []string
}

// Entry is what the journal knows about one operation.
type Entry struct {
	OpID      string       `json:"op"`
	Kind      wire.Kind    `json:"kind"`
	Digest    string       `json:"digest"`
	Attempt   int          `json:"attempt,omitempty"`
	State     string       `json:"state"` // "started" or "done"
	StartedAt time.Time    `json:"started_at"`
	Result    *wire.Result `json:"result,omitempty"`
}

const (
	stateStarted = "started"
	stateDone    = "done"
)

// DefaultKeep is how many operations a journal remembers. The controller
// stops resending an op once it holds its result, so only recent ones
// matter; the bound keeps the file small for years of uptime.
const DefaultKeep = 2000

// OpenJournal loads (or creates) the journal at path. An operation found
// started but not done was cut short by a crash: it is recorded as
// interrupted, so a resend reports that instead of running it again. A
// torn last line (crash mid-write) is dropped; corruption anywhere else is
// an error, because guessing could run an operation twice.
func OpenJournal(path string, keep int) (*Journal, error) {
	if keep <= 0 {
		keep = DefaultKeep
	}
	j := &Journal{path: path, keep: keep, entries: map[string]*Entry{}}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil || e.OpID == "" {
			if i == len(lines)-1 {
				break // torn tail: the record never completed, so never counted
			}
			return nil, fmt.Errorf("journal %s: line %d is corrupt; refusing to guess which operations ran (move the file aside to start over)", path, i+1)
		}
		j.apply(&e)
	}
	now := time.Now().UTC()
	for _, id := range j.order {
		e := j.entries[id]
		if e.State == stateStarted {
			e.State = stateDone
			e.Result = &wire.Result{OpID: id, Attempt: e.Attempt, StartedAt: e.StartedAt, FinishedAt: now, Error: wire.Errorf(wire.CodeInterrupted,
				"the agent stopped while %s was running (started %s); it was not run again", e.Kind, e.StartedAt.Format(time.RFC3339))}
			j.interrupted = append(j.interrupted, id)
		}
	}
	if err := j.rewrite(); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *Journal) apply(e *Entry) {
	if _, ok := j.entries[e.OpID]; !ok {
		j.order = append(j.order, e.OpID)
	}
	j.entries[e.OpID] = e
	if e.State == stateDone {
		j.lastCompleted = e.OpID
	}
}

// rewrite writes the retained entries to a new file and renames it over
// the journal: it compacts and seals interrupted entries.
func (j *Journal) rewrite() error {
	if len(j.order) > j.keep {
		drop := j.order[:len(j.order)-j.keep]
		for _, id := range drop {
			delete(j.entries, id)
		}
		j.order = append([]string(nil), j.order[len(j.order)-j.keep:]...)
	}
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, id := range j.order {
		line, _ := json.Marshal(onDisk(j.entries[id]))
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("journal: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	syncDir(filepath.Dir(j.path))
	if j.f != nil {
		j.f.Close()
	}
	j.f, err = os.OpenFile(j.path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// Lookup returns a copy of the entry for id.
func (j *Journal) Lookup(id string) (Entry, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e, ok := j.entries[id]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Interrupted lists the operations OpenJournal found cut short.
func (j *Journal) Interrupted() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.interrupted...)
}

// LastCompleted is the id of the operation that finished last.
func (j *Journal) LastCompleted() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lastCompleted
}

// Begin durably records that op (this run of it) is about to run.
func (j *Journal) Begin(op wire.Operation, at time.Time) error {
	return j.append(&Entry{OpID: op.ID, Kind: op.Kind, Digest: op.Digest(), Attempt: op.Attempt, State: stateStarted, StartedAt: at})
}

// Finish durably records op's result.
func (j *Journal) Finish(op wire.Operation, startedAt time.Time, res wire.Result) error {
	return j.append(&Entry{OpID: op.ID, Kind: op.Kind, Digest: op.Digest(), Attempt: op.Attempt, State: stateDone, StartedAt: startedAt, Result: &res})
}

// onDisk is what the file records of e. A result holding credentials (a
// root password) stays in memory only, where a resend to this process
// still finds it; the file records that it was not kept, so after a
// restart a resend is told to ask again rather than handed the password
// that sat on the disk.
func onDisk(e *Entry) *Entry {
	if e.Result == nil || e.Result.Error != nil || !wire.ResultHoldsCredentials(e.Kind, e.Result.Payload) {
		return e
	}
	d := *e
	d.Result = &wire.Result{OpID: e.Result.OpID, StartedAt: e.Result.StartedAt, FinishedAt: e.Result.FinishedAt,
		Error: wire.Errorf(wire.CodeInterrupted, "%s finished at %s, but its result held credentials, which the agent does not keep on disk, and the agent restarted before the controller collected it: run it again",
			e.Kind, e.Result.FinishedAt.Format(time.RFC3339))}
	return &d
}

func (j *Journal) append(e *Entry) error {
	line, err := json.Marshal(onDisk(e))
	if err != nil {
		return fmt.Errorf("journal: encode %s: %w", e.OpID, err)
	}
	line = append(line, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("journal: append %s: journal closed", e.OpID)
	}
	_, err = j.f.Write(line)
	if err == nil {
		err = j.f.Sync()
	}
	if err != nil {
		// A result is still remembered for this process's lifetime, so
		// a resend gets it instead of a second run.
		if e.State == stateDone {
			j.apply(e)
		}
		return fmt.Errorf("journal: append %s: %w", e.OpID, err)
	}
	j.apply(e)
	if len(j.order) > 2*j.keep {
		return j.rewrite()
	}
	return nil
}

// Close closes the file.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
