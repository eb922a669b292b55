package mariadb

import (
	"context"
	"os"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// Log names.
const (
	LogError     = "error"
	LogSlowQuery = "slow_query"
)

func (m *Manager) logPath(name string) (string, bool) {
	switch name {
	case LogError:
		return m.cfg.ErrorLog, true
	case LogSlowQuery:
		return m.cfg.SlowQueryLog, true
	}
	return "", false
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
		{Name: LogSlowQuery, Type: "datastore", Path: m.cfg.SlowQueryLog, Enabled: slowOn},
	}
	for i := range out {
		if st, err := os.Stat(out[i].Path); err == nil {
			out[i].SizeBytes = st.Size()
		}
	}
	return out, nil
}

// TailLog returns the last lines of one of the logs Logs lists.
func (m *Manager) TailLog(ctx context.Context, name string, lines int) (wire.LogTail, error) {
	path, ok := m.logPath(name)
	if !ok {
		return wire.LogTail{}, wire.Errorf(wire.CodeNotFound, "no log named %s (mariadb has %s and %s)", show(name), LogError, LogSlowQuery)
	}
	if err := datastore.CheckTailLines(lines); err != nil {
		return wire.LogTail{}, err
	}
	return datastore.TailFile(name, path, lines, wire.MaxTailBytes)
}
