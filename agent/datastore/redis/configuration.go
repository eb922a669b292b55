package redis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// ApplyConfiguration makes the override file hold exactly args.Values.
// Values whose rule applies live are set with one CONFIG SET, which Redis
// applies all or nothing; the others (Redis's immutable parameters) wait
// for a restart and the status says restart_required. A value dropped from
// the set whose rule is dynamic goes back live, in the same CONFIG SET, to
// the base redis.conf's value when that sets it; otherwise (Redis cannot
// tell its own default) it waits for a restart too. Every value is checked
// against its rule and against CONFIG GET (the parameter exists, its
// current value has the rule's type) before anything changes.
func (m *Manager) ApplyConfiguration(ctx context.Context, args wire.ConfigurationArgs) (wire.ConfigurationResult, error) {
	settings, err := checkConfiguration(args)
	if err != nil {
		return wire.ConfigurationResult{}, err
	}
	if err := m.ready(ctx); err != nil {
		return wire.ConfigurationResult{}, err
	}
	return m.applyConfiguration(ctx, args, settings)
}

func (m *Manager) applyConfiguration(ctx context.Context, args wire.ConfigurationArgs, settings []datastore.Setting) (wire.ConfigurationResult, error) {
	var res wire.ConfigurationResult
	current := map[string]string{}
	for _, s := range settings {
		v, ok, err := m.configGet(ctx, s.Name)
		if err != nil {
			return res, err
		}
		if !ok {
			return res, invalid("parameter %s: Redis has no such parameter", s.Name)
		}
		if err := checkKind(s, v); err != nil {
			return res, err
		}
		current[s.Name] = v
	}
	prevData, err := os.ReadFile(m.cfg.OverridesFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("read overrides: %w", err)
	}
	prev := parseOverrides(prevData)

	live := []string{"CONFIG", "SET"}
	undo := []string{"CONFIG", "SET"}
	for _, s := range settings {
		if s.Rule.RestartRequired {
			if prev[s.Name] != configValue(s) {
				res.PendingRestart = append(res.PendingRestart, s.Name)
			}
			continue
		}
		live = append(live, s.Name, configValue(s))
		undo = append(undo, s.Name, current[s.Name])
		res.AppliedLive = append(res.AppliedLive, s.Name)
	}
	resets, restart := datastore.Resets(args, prev, settings)
	base := m.baseValues()
	for _, name := range resets {
		v, inBase := base[name]
		old, ok, err := m.configGet(ctx, name)
		if err != nil {
			return res, err
		}
		if !inBase || !ok {
			restart = append(restart, name)
			continue
		}
		live = append(live, name, v)
		undo = append(undo, name, old)
		res.AppliedLive = append(res.AppliedLive, name)
	}
	if len(live) > 2 {
		if _, err := m.do(ctx, live...); err != nil {
			var se *ServerError
			if errors.As(err, &se) {
				return wire.ConfigurationResult{}, invalid("Redis refused the configuration (nothing was changed): %s", strings.TrimPrefix(se.Message, "ERR "))
			}
			return wire.ConfigurationResult{}, fmt.Errorf("config set: %w", err)
		}
		// Switching appendonly on starts writing the first AOF in the
		// background, and until it is written Redis refuses to shut
		// down; the change is done when the file is.
		if err := m.waitPersistence(ctx); err != nil {
			return res, err
		}
	}
	res.PendingRestart = append(res.PendingRestart, restart...)

	if err := datastore.WriteFileAtomic(m.cfg.OverridesFile, renderOverrides(settings), 0o640); err != nil {
		if len(undo) > 2 {
			if _, uerr := m.do(context.WithoutCancel(ctx), undo...); uerr != nil {
				m.log.Error("could not restore parameters after a failed configuration change", "err", uerr)
			}
		}
		return wire.ConfigurationResult{}, err
	}
	res.RestartRequired, err = m.lc.RecordPendingRestart(len(res.PendingRestart) > 0)
	return res, err
}

// waitPersistence waits until no AOF rewrite runs or is scheduled: Redis
// refuses to shut down ("Writing initial AOF, can't exit") while the
// first AOF after switching appendonly on is being written, and systemd
// would wait on it.
func (m *Manager) waitPersistence(ctx context.Context) error {
	for {
		r, err := m.do(ctx, "INFO", "persistence")
		if err != nil {
			return fmt.Errorf("info persistence: %w", err)
		}
		f := parseInfo(r.Str)
		busy := func(k string) bool { v, ok := f[k]; return ok && v != "0" }
		if !busy("aof_rewrite_in_progress") && !busy("aof_rewrite_scheduled") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the append-only file to be written: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// configGet reads one parameter; ok is false when Redis has none by that
// name. Names passed paramPattern, so they hold no glob characters.
func (m *Manager) configGet(ctx context.Context, name string) (value string, ok bool, err error) {
	r, err := m.do(ctx, "CONFIG", "GET", name)
	if err != nil {
		return "", false, fmt.Errorf("config get %s: %w", name, err)
	}
	for i := 0; i+1 < len(r.Array); i += 2 {
		if r.Array[i].Str == name {
			return r.Array[i+1].Str, true, nil
		}
	}
	return "", false, nil
}

// checkKind compares the rule's type with the parameter's current value:
// Redis booleans read yes/no, integers read as digits.
func checkKind(s datastore.Setting, current string) error {
	switch s.Type {
	case "boolean":
		if current != "yes" && current != "no" {
			return invalid("parameter %s: the rule says boolean but Redis's value %s is not yes or no", s.Name, show(current))
		}
	case "integer":
		if _, err := strconv.ParseInt(current, 10, 64); err != nil {
			if _, uerr := strconv.ParseUint(current, 10, 64); uerr != nil {
				return invalid("parameter %s: the rule says integer but Redis's value %s is not one", s.Name, show(current))
			}
		}
	case "float":
		if _, err := strconv.ParseFloat(current, 64); err != nil {
			return invalid("parameter %s: the rule says float but Redis's value %s is not a number", s.Name, show(current))
		}
	}
	return nil
}

// baseValues are the settings of the base redis.conf (ConfigFile) and
// the defaults layer over it: what the server runs with when no group
// overrides them. Unreadable: none.
func (m *Manager) baseValues() map[string]string {
	out := map[string]string{}
	for _, p := range []string{m.cfg.ConfigFile, defaultsFile(m.cfg)} {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for k, v := range parseOverrides(data) {
			out[k] = v
		}
	}
	return out
}

// Configuration reports the directives of redis.conf as rendered at
// prepare for the flavor, the defaults layer (the image's template for
// the flavor) and the group, as the server reads them (the group,
// included last, wins).
func (m *Manager) Configuration(ctx context.Context) (wire.EffectiveConfiguration, error) {
	layers, err := datastore.ReadLayers(m.lc, parseConf, m.cfg.ConfigFile, defaultsFile(m.cfg), m.cfg.OverridesFile)
	if err != nil {
		return wire.EffectiveConfiguration{}, err
	}
	return wire.EffectiveConfiguration{Values: datastore.EffectiveValues(layers...)}, nil
}

// parseConf reads a redis.conf the agent wrote; include is a directive,
// not a setting.
func parseConf(data []byte) map[string]string {
	out := parseOverrides(data)
	delete(out, "include")
	return out
}
