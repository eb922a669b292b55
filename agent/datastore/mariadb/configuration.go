package mariadb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// ApplyConfiguration makes the override file hold exactly args.Values.
// Values whose rule is dynamic are also set live (SET GLOBAL); the others
// wait for a restart and the status says restart_required. A dynamic
// value dropped from the set goes back live to what the server runs with
// without it — the defaults layer's value (the image's template), the base
// configuration's, or the server's default —
// as Trove resets a detached group; a restart-only one waits for a
// restart. Every value is checked against its rule and the server's
// variable list before anything changes; a live change the server refuses
// undoes the ones made before it.
func (m *Manager) ApplyConfiguration(ctx context.Context, args wire.ConfigurationArgs) (wire.ConfigurationResult, error) {
	settings, err := datastore.CheckConfiguration(args, paramPattern.MatchString)
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
	prevData, err := os.ReadFile(m.cfg.OverridesFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("read overrides: %w", err)
	}
	prev := parseOverrides(prevData)
	resets, restart := datastore.Resets(args, prev, settings)
	names := make([]string, 0, len(settings)+len(resets))
	for _, s := range settings {
		names = append(names, s.Name)
	}
	names = append(names, resets...)
	current, err := m.globalVariables(ctx, names)
	if err != nil {
		return res, err
	}
	for _, s := range settings {
		if _, ok := current[s.Name]; !ok {
			return res, invalid("parameter %s: MariaDB has no such variable", s.Name)
		}
	}

	type change struct{ name, old string }
	var applied []change
	undo := func() {
		for i := len(applied) - 1; i >= 0; i-- {
			c := applied[i]
			if err := m.setGlobal(context.WithoutCancel(ctx), c.name, c.old, rawKind(c.old)); err != nil {
				m.log.Error("could not restore variable after a failed configuration change", "variable", c.name, "err", err)
			}
		}
	}
	for _, s := range settings {
		if s.Rule.RestartRequired {
			if prev[s.Name] != s.Text {
				res.PendingRestart = append(res.PendingRestart, s.Name)
			}
			continue
		}
		if err := m.setGlobal(ctx, s.Name, s.Text, s.Type); err != nil {
			undo()
			var me *mysql.MySQLError
			if errors.As(err, &me) && (me.Number == 1231 || me.Number == 1232 || me.Number == 1238 || me.Number == 1621) {
				return wire.ConfigurationResult{}, invalid("parameter %s: MariaDB refused %s: %s", s.Name, show(s.Text), me.Message)
			}
			return wire.ConfigurationResult{}, fmt.Errorf("set %s: %w", s.Name, err)
		}
		applied = append(applied, change{s.Name, current[s.Name]})
		res.AppliedLive = append(res.AppliedLive, s.Name)
	}
	base := m.baseValues()
	for _, name := range resets {
		old, ok := current[name]
		if !ok {
			restart = append(restart, name) // not a variable of this server: leave it to a restart
			continue
		}
		var err error
		if v, ok := base[name]; ok {
			err = m.setGlobal(ctx, name, v, rawKind(v))
		} else {
			err = m.setDefault(ctx, name)
		}
		if err != nil {
			undo()
			return wire.ConfigurationResult{}, fmt.Errorf("put %s back to its value without the group: %w", name, err)
		}
		applied = append(applied, change{name, old})
		res.AppliedLive = append(res.AppliedLive, name)
	}
	res.PendingRestart = append(res.PendingRestart, restart...)

	if err := datastore.WriteFileAtomic(m.cfg.OverridesFile, renderOverrides(settings), 0o644); err != nil {
		undo()
		return wire.ConfigurationResult{}, err
	}
	res.RestartRequired, err = m.lc.RecordPendingRestart(len(res.PendingRestart) > 0)
	return res, err
}

// globalVariables returns the current values of the named variables that
// exist; missing names are absent from the map.
func (m *Manager) globalVariables(ctx context.Context, names []string) (map[string]string, error) {
	out := map[string]string{}
	if len(names) == 0 {
		return out, nil
	}
	args := make([]any, len(names))
	for i, n := range names {
		args[i] = strings.ToUpper(n)
	}
	q := "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME IN (?" +
		strings.Repeat(",?", len(names)-1) + ")"
	rows, err := m.conn().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read variables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var value *string
		if err := rows.Scan(&name, &value); err != nil {
			return nil, fmt.Errorf("read variables: %w", err)
		}
		v := ""
		if value != nil {
			v = *value
		}
		out[strings.ToLower(name)] = v
	}
	return out, rows.Err()
}

// setGlobal sets a variable. name passed paramPattern; numbers and ON/OFF
// are canonical renderings and go inline (the server wants them typed);
// strings go as a placeholder.
func (m *Manager) setGlobal(ctx context.Context, name, value, kind string) error {
	if !paramPattern.MatchString(name) {
		return invalid("parameter %s: not a valid name", show(name))
	}
	var err error
	switch kind {
	case "integer", "float", "boolean":
		_, err = m.conn().ExecContext(ctx, "SET GLOBAL "+name+" = "+value)
	default:
		_, err = m.conn().ExecContext(ctx, "SET GLOBAL "+name+" = ?", value)
	}
	return err
}

// setDefault puts a variable back to the server's compiled-in default.
func (m *Manager) setDefault(ctx context.Context, name string) error {
	if !paramPattern.MatchString(name) {
		return invalid("parameter %s: not a valid name", show(name))
	}
	_, err := m.conn().ExecContext(ctx, "SET GLOBAL "+name+" = DEFAULT")
	return err
}

// baseValues are the [mysqld] settings of the base configuration (the
// rendered ConfigFile) and the defaults layer over it, with size suffixes
// turned into bytes: what the server runs with when no group overrides
// them. Unreadable: none.
func (m *Manager) baseValues() map[string]string {
	out := map[string]string{}
	for _, p := range []string{m.cfg.ConfigFile, m.defaultsFile()} {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for k, v := range parseBaseConfig(data) {
			out[k] = v
		}
	}
	return out
}

// rawKind classifies a value read back from the server for restoring it.
func rawKind(v string) string {
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		return "integer"
	}
	if _, err := strconv.ParseUint(v, 10, 64); err == nil {
		return "integer"
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil && !strings.ContainsAny(v, "eEinfINFxX") {
		return "float"
	}
	if v == "ON" || v == "OFF" {
		return "boolean"
	}
	return "string"
}

// Configuration reports the [mysqld] settings of the base configuration
// rendered at prepare for the flavor, the defaults layer (the image's
// template for the flavor), the log switches and the group, as
// the server reads them (later files win). Sizes are in bytes.
func (m *Manager) Configuration(ctx context.Context) (wire.EffectiveConfiguration, error) {
	layers, err := datastore.ReadLayers(m.lc, parseBaseConfig, m.cfg.ConfigFile, m.defaultsFile(), m.logSettingsFile(), m.cfg.OverridesFile)
	if err != nil {
		return wire.EffectiveConfiguration{}, err
	}
	return wire.EffectiveConfiguration{Values: datastore.EffectiveValues(layers...)}, nil
}
