package redis

import (
	"context"
	"os"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// LogServer is the server's log (Trove's name for Redis's log).
const LogServer = "redis"

// Logs lists the server's log.
func (m *Manager) Logs(ctx context.Context) ([]wire.LogInfo, error) {
	info := wire.LogInfo{Name: LogServer, Type: "datastore", Path: m.cfg.LogFile, Enabled: true}
	if st, err := os.Stat(info.Path); err == nil {
		info.SizeBytes = st.Size()
	}
	return []wire.LogInfo{info}, nil
}

// TailLog returns the last lines of the server's log.
func (m *Manager) TailLog(ctx context.Context, name string, lines int) (wire.LogTail, error) {
	if name != LogServer {
		return wire.LogTail{}, wire.Errorf(wire.CodeNotFound, "no log named %s (redis has %s)", show(name), LogServer)
	}
	if err := datastore.CheckTailLines(lines); err != nil {
		return wire.LogTail{}, err
	}
	return datastore.TailFile(name, m.cfg.LogFile, lines, wire.MaxTailBytes)
}

// LogPath names the file behind a log, for publishing.
func (m *Manager) LogPath(name string) (string, error) {
	if name != LogServer {
		return "", wire.Errorf(wire.CodeNotFound, "no log named %s (redis has %s)", show(name), LogServer)
	}
	return m.cfg.LogFile, nil
}
