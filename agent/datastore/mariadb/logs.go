package mariadb

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Log names.
const (
	LogError     = "error"
	LogSlowQuery = "slow_query"
)

// SlowQuerySeconds is long_query_time while the agent has the slow query
// log on (Trove's default threshold for guest logs: one second), unless
// the configuration group sets long_query_time.
const SlowQuerySeconds = "1"

// logSettingsFile keeps the log switches. It sits beside the overrides
// file and sorts between the base configuration (90-) and the group
// (95-), so the group's value wins when both set a parameter.
func (m *Manager) logSettingsFile() string {
	return filepath.Join(filepath.Dir(m.cfg.OverridesFile), "92-strata-logs.cnf")
}

func (m *Manager) logPath(name string) (string, bool) {
	switch name {
	case LogError:
		return m.cfg.ErrorLog, true
	case LogSlowQuery:
		return m.cfg.SlowQueryLog, true
	}
	return "", false
}

// LogPath names the file behind a log, for publishing.
func (m *Manager) LogPath(name string) (string, error) {
	path, ok := m.logPath(name)
	if !ok {
		return "", m.noLog(name)
	}
	return path, nil
}

func (m *Manager) noLog(name string) error {
	return wire.Errorf(wire.CodeNotFound, "no log named %s (mariadb has %s and %s)", show(name), LogError, LogSlowQuery)
}

// Logs lists the server's error log and slow query log.
func (m *Manager) Logs(ctx context.Context) ([]wire.LogInfo, error) {
	slowOn := false
	if m.ping(ctx) == nil {
		var v int
		if m.conn().QueryRowContext(ctx, "SELECT @@GLOBAL.slow_query_log").Scan(&v) == nil {
			slowOn = v == 1
		}
	}
	out := []wire.LogInfo{
		{Name: LogError, Type: "datastore", Path: m.cfg.ErrorLog, Enabled: true},
		{Name: LogSlowQuery, Type: "datastore", Path: m.cfg.SlowQueryLog, Enabled: slowOn, Switchable: true},
	}
	for i := range out {
		if st, err := os.Stat(out[i].Path); err == nil {
			out[i].SizeBytes = st.Size()
		}
	}
	return out, nil
}

// SetLog turns the slow query log on (slow_query_log, and long_query_time
// at SlowQuerySeconds unless the group sets it) or off, on the running
// server and in the log settings file. The error log cannot be switched;
// a configuration group that sets slow_query_log owns it.
func (m *Manager) SetLog(ctx context.Context, name string, enable bool) (wire.LogInfo, error) {
	if _, ok := m.logPath(name); !ok {
		return wire.LogInfo{}, m.noLog(name)
	}
	if name != LogSlowQuery {
		return wire.LogInfo{}, wire.Errorf(wire.CodeFailedPrecondition, "log %s is always on; only %s can be enabled or disabled", name, LogSlowQuery)
	}
	groupData, err := os.ReadFile(m.cfg.OverridesFile)
	if err != nil && !os.IsNotExist(err) {
		return wire.LogInfo{}, fmt.Errorf("read overrides: %w", err)
	}
	group := parseOverrides(groupData)
	if v, ok := group["slow_query_log"]; ok {
		return wire.LogInfo{}, wire.Errorf(wire.CodeFailedPrecondition,
			"slow_query_log is set to %s by the instance's configuration group, which wins over log enable/disable: change or detach the group", v)
	}
	_, groupSetsTime := group["long_query_time"]
	if err := m.ping(ctx); err != nil {
		return wire.LogInfo{}, wire.Errorf(wire.CodeUnavailable, "log %s: the server does not answer: %v", name, err)
	}
	file := "# Written by strata-agent: guest log switches (log enable/disable). The configuration group, read after this file, wins.\n[mysqld]\n"
	stmts := []string{}
	if enable {
		file += "slow_query_log = 1\n"
		if !groupSetsTime {
			file += "long_query_time = " + SlowQuerySeconds + "\n"
			stmts = append(stmts, "SET GLOBAL long_query_time = "+SlowQuerySeconds)
		}
		stmts = append(stmts, "SET GLOBAL slow_query_log = ON")
	} else {
		file += "slow_query_log = 0\n"
		stmts = append(stmts, "SET GLOBAL slow_query_log = OFF")
		if !groupSetsTime {
			stmts = append(stmts, "SET GLOBAL long_query_time = DEFAULT")
		}
	}
	// The file first: a switch the server took but the file lost would
	// flip back at the next restart. If the server then refuses, the
	// file goes back to what it held.
	prev, prevErr := os.ReadFile(m.logSettingsFile())
	if err := datastore.WriteFileAtomic(m.logSettingsFile(), []byte(file), 0o644); err != nil {
		return wire.LogInfo{}, fmt.Errorf("log %s: %w", name, err)
	}
	if err := m.exec(ctx, stmts...); err != nil {
		if prevErr == nil {
			_ = datastore.WriteFileAtomic(m.logSettingsFile(), prev, 0o644)
		} else {
			_ = os.Remove(m.logSettingsFile())
		}
		return wire.LogInfo{}, fmt.Errorf("log %s: %w", name, err)
	}
	logs, err := m.Logs(ctx)
	if err != nil {
		return wire.LogInfo{}, err
	}
	return logs[1], nil
}

// TailLog returns the last lines of one of the logs Logs lists.
func (m *Manager) TailLog(ctx context.Context, name string, lines int) (wire.LogTail, error) {
	path, ok := m.logPath(name)
	if !ok {
		return wire.LogTail{}, m.noLog(name)
	}
	if err := datastore.CheckTailLines(lines); err != nil {
		return wire.LogTail{}, err
	}
	return datastore.TailFile(name, path, lines, wire.MaxTailBytes)
}
