package postgresql

import (
	"context"
	"os"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// LogGeneral is the server's log (Trove's name for it): errors, and
// slow statements once log_min_duration_statement is set.
const LogGeneral = "general"

// Logs lists the server's log.
func (m *Manager) Logs(ctx context.Context) ([]wire.LogInfo, error) {
	info := wire.LogInfo{Name: LogGeneral, Type: "datastore", Path: m.cfg.LogFile, Enabled: true}
	if st, err := os.Stat(info.Path); err == nil {
		info.SizeBytes = st.Size()
	}
	return []wire.LogInfo{info}, nil
}

// TailLog returns the last lines of the server's log.
func (m *Manager) TailLog(ctx context.Context, name string, lines int) (wire.LogTail, error) {
	if name != LogGeneral {
		return wire.LogTail{}, wire.Errorf(wire.CodeNotFound, "no log named %s (postgresql has %s)", show(name), LogGeneral)
	}
	if err := datastore.CheckTailLines(lines); err != nil {
		return wire.LogTail{}, err
	}
	return datastore.TailFile(name, m.cfg.LogFile, lines, wire.MaxTailBytes)
}
