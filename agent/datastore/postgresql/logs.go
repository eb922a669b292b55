package postgresql

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// LogGeneral is the server's log (Trove's name for it): errors always,
// and statements slower than SlowStatementMillis while it is enabled
// (log_min_duration_statement, as Trove's PostgreSQL guest does).
const LogGeneral = "general"

// SlowStatementMillis is log_min_duration_statement while the general log
// is enabled (Trove's default threshold for guest logs: one second).
const SlowStatementMillis = "1000"

// logSettingsFile keeps the log switch; postgresql.conf includes it just
// before the group's overrides file, so the group wins.
func logSettingsFile(cfg Config) string {
	return filepath.Join(filepath.Dir(cfg.OverridesFile), "strata-logs.conf")
}

func (m *Manager) noLog(name string) error {
	return wire.Errorf(wire.CodeNotFound, "no log named %s (postgresql has %s)", show(name), LogGeneral)
}

// LogPath names the file behind a log, for publishing.
func (m *Manager) LogPath(name string) (string, error) {
	if name != LogGeneral {
		return "", m.noLog(name)
	}
	return m.cfg.LogFile, nil
}

// Logs lists the server's log; it counts as enabled while slow statements
// are logged.
func (m *Manager) Logs(ctx context.Context) ([]wire.LogInfo, error) {
	info := wire.LogInfo{Name: LogGeneral, Type: "datastore", Path: m.cfg.LogFile, Switchable: true}
	if m.ping(ctx) == nil {
		var v string
		if m.conn().QueryRowContext(ctx, "SELECT current_setting('log_min_duration_statement')").Scan(&v) == nil {
			info.Enabled = v != "-1"
		}
	}
	if st, err := os.Stat(info.Path); err == nil {
		info.SizeBytes = st.Size()
	}
	return []wire.LogInfo{info}, nil
}

// SetLog sets log_min_duration_statement to SlowStatementMillis (enable)
// or -1 (disable) in the log settings file and reloads the server. A
// configuration group that sets log_min_duration_statement owns it.
func (m *Manager) SetLog(ctx context.Context, name string, enable bool) (wire.LogInfo, error) {
	if name != LogGeneral {
		return wire.LogInfo{}, m.noLog(name)
	}
	groupData, err := os.ReadFile(m.cfg.OverridesFile)
	if err != nil && !os.IsNotExist(err) {
		return wire.LogInfo{}, fmt.Errorf("read overrides: %w", err)
	}
	if v, ok := parseOverrides(groupData)["log_min_duration_statement"]; ok {
		return wire.LogInfo{}, wire.Errorf(wire.CodeFailedPrecondition,
			"log_min_duration_statement is set to %s by the instance's configuration group, which wins over log enable/disable: change or detach the group", v)
	}
	if err := m.ping(ctx); err != nil {
		return wire.LogInfo{}, wire.Errorf(wire.CodeUnavailable, "log %s: the server does not answer: %v", name, err)
	}
	value := "-1"
	if enable {
		value = SlowStatementMillis
	}
	file := "# Written by strata-agent: guest log switches (log enable/disable). The configuration group, included after this file, wins.\n" +
		"log_min_duration_statement = " + value + "\n"
	path := logSettingsFile(m.cfg)
	prev, prevErr := os.ReadFile(path)
	if err := datastore.WriteFileAtomic(path, []byte(file), 0o644); err != nil {
		return wire.LogInfo{}, fmt.Errorf("log %s: %w", name, err)
	}
	c, err := m.conn().Conn(ctx)
	if err == nil {
		err = reload(ctx, c)
		c.Close()
	}
	if err != nil {
		if prevErr == nil {
			_ = datastore.WriteFileAtomic(path, prev, 0o644)
		} else {
			_ = os.Remove(path)
		}
		return wire.LogInfo{}, fmt.Errorf("log %s: %w", name, err)
	}
	logs, err := m.Logs(ctx)
	if err != nil {
		return wire.LogInfo{}, err
	}
	if logs[0].Enabled != enable {
		return logs[0], fmt.Errorf("log %s: the server did not take log_min_duration_statement = %s (is %s readable by it?)", name, value, path)
	}
	return logs[0], nil
}

// TailLog returns the last lines of the server's log.
func (m *Manager) TailLog(ctx context.Context, name string, lines int) (wire.LogTail, error) {
	if name != LogGeneral {
		return wire.LogTail{}, m.noLog(name)
	}
	if err := datastore.CheckTailLines(lines); err != nil {
		return wire.LogTail{}, err
	}
	return datastore.TailFile(name, m.cfg.LogFile, lines, wire.MaxTailBytes)
}
