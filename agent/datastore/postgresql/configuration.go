package postgresql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// serverParam is what pg_settings says about a parameter.
type serverParam struct {
	Name, VarType, Context, Unit string
	Min, Max                     sql.NullString
	EnumVals                     []string
	Setting, SourceFile          sql.NullString
	PendingRestart               bool
}

// restartContexts are pg_settings contexts a reload does not change.
func (p serverParam) needsRestart() bool { return p.Context == "postmaster" }

// ApplyConfiguration makes the override file hold exactly args.Values and
// has the server reload it. Each value is checked against its rule and
// against pg_settings (the parameter exists, is settable, has the rule's
// type, lies within the server's own bounds, is one of its enum values;
// strings of session parameters are tried with set_config in a
// transaction that is rolled back) before the file changes. Parameters a
// reload applies (sighup, superuser, user contexts) take effect at once;
// postmaster ones wait for a restart and the status says
// restart_required. If the server still refuses a value on reload, the
// previous file is put back and reloaded.
func (m *Manager) ApplyConfiguration(ctx context.Context, args wire.ConfigurationArgs) (wire.ConfigurationResult, error) {
	settings, err := checkConfiguration(args)
	if err != nil {
		return wire.ConfigurationResult{}, err
	}
	if err := m.ready(ctx); err != nil {
		return wire.ConfigurationResult{}, err
	}
	return m.applyConfiguration(ctx, settings)
}

func (m *Manager) applyConfiguration(ctx context.Context, settings []datastore.Setting) (wire.ConfigurationResult, error) {
	var res wire.ConfigurationResult
	prevData, err := os.ReadFile(m.cfg.OverridesFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("read overrides: %w", err)
	}
	removed := datastore.Dropped(parseOverrides(prevData), settings)
	names := make([]string, 0, len(settings)+len(removed))
	for _, s := range settings {
		names = append(names, s.Name)
	}
	names = append(names, removed...)

	c, err := m.conn().Conn(ctx)
	if err != nil {
		return res, fmt.Errorf("configuration: %w", err)
	}
	defer c.Close()
	params, err := serverParams(ctx, c, names)
	if err != nil {
		return res, err
	}
	for _, s := range settings {
		if err := checkAgainstServer(ctx, c, s, params[s.Name]); err != nil {
			return res, err
		}
	}

	if err := datastore.WriteFileAtomic(m.cfg.OverridesFile, renderOverrides(settings), 0o644); err != nil {
		return res, err
	}
	restore := func(cause error) error {
		bg := context.WithoutCancel(ctx)
		if err := datastore.WriteFileAtomic(m.cfg.OverridesFile, prevData, 0o644); err != nil {
			m.log.Error("could not restore the previous configuration group", "err", err)
		} else if err := reload(bg, c); err != nil {
			m.log.Error("could not reload the previous configuration group", "err", err)
		}
		return cause
	}
	if err := reload(ctx, c); err != nil {
		return res, restore(err)
	}
	after, err := serverParams(ctx, c, names)
	if err != nil {
		return res, restore(err)
	}
	for _, s := range settings {
		p := after[s.Name]
		if p.needsRestart() {
			if p.PendingRestart {
				res.PendingRestart = append(res.PendingRestart, s.Name)
			}
			continue
		}
		// A value the server took is now read from the override file.
		if p.SourceFile.String != m.cfg.OverridesFile {
			src := p.SourceFile.String
			if src == "" {
				src = "its default"
			}
			return wire.ConfigurationResult{}, restore(invalid("parameter %s: PostgreSQL did not take %s on reload (it keeps the value from %s; see the server log)",
				s.Name, show(s.Text), src))
		}
		res.AppliedLive = append(res.AppliedLive, s.Name)
	}
	for _, name := range removed {
		if after[name].needsRestart() && after[name].PendingRestart {
			res.PendingRestart = append(res.PendingRestart, name)
		}
	}
	sort.Strings(res.PendingRestart)
	res.RestartRequired, err = m.lc.RecordPendingRestart(len(res.PendingRestart) > 0)
	return res, err
}

// serverParams reads pg_settings for the named parameters that exist,
// keyed by lower-case name (PostgreSQL's names are case-insensitive and
// pg_settings spells some in mixed case: TimeZone, DateStyle).
func serverParams(ctx context.Context, c *sql.Conn, names []string) (map[string]serverParam, error) {
	out := map[string]serverParam{}
	if len(names) == 0 {
		return out, nil
	}
	rows, err := c.QueryContext(ctx, `
		SELECT lower(name), vartype, context, coalesce(unit, ''), min_val, max_val, coalesce(array_to_string(enumvals, E'\n'), ''),
		       setting, sourcefile, pending_restart
		FROM pg_settings WHERE lower(name) = ANY($1)`, names)
	if err != nil {
		return nil, fmt.Errorf("read pg_settings: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p serverParam
		var enums string
		if err := rows.Scan(&p.Name, &p.VarType, &p.Context, &p.Unit, &p.Min, &p.Max, &enums, &p.Setting, &p.SourceFile, &p.PendingRestart); err != nil {
			return nil, fmt.Errorf("read pg_settings: %w", err)
		}
		if enums != "" {
			p.EnumVals = strings.Split(enums, "\n")
		}
		out[p.Name] = p
	}
	return out, rows.Err()
}

// ruleTypes maps a rule type to the pg_settings vartypes it may describe.
var ruleTypes = map[string][]string{
	"integer": {"integer"}, "float": {"real"}, "boolean": {"bool"}, "string": {"string", "enum"},
}

// checkAgainstServer checks a setting against what the server says about
// its parameter. Nothing is changed.
func checkAgainstServer(ctx context.Context, c *sql.Conn, s datastore.Setting, p serverParam) error {
	switch {
	case p.Name == "":
		return invalid("parameter %s: PostgreSQL has no such parameter", s.Name)
	case p.Context == "internal":
		return invalid("parameter %s: PostgreSQL does not let it be set (it is fixed at build or initdb time)", s.Name)
	case !slices.Contains(ruleTypes[s.Type], p.VarType):
		return invalid("parameter %s: the rule says %s but PostgreSQL's parameter is %s", s.Name, s.Type, p.VarType)
	}
	switch p.VarType {
	case "integer", "real":
		v, _ := new(big.Float).SetString(s.Text)
		if lo, ok := new(big.Float).SetString(p.Min.String); ok && p.Min.Valid && v.Cmp(lo) < 0 {
			return invalid("parameter %s: %s is below PostgreSQL's minimum %s%s", s.Name, s.Text, p.Min.String, unitSuffix(p.Unit))
		}
		if hi, ok := new(big.Float).SetString(p.Max.String); ok && p.Max.Valid && v.Cmp(hi) > 0 {
			return invalid("parameter %s: %s is above PostgreSQL's maximum %s%s", s.Name, s.Text, p.Max.String, unitSuffix(p.Unit))
		}
	case "enum":
		if !slices.ContainsFunc(p.EnumVals, func(e string) bool { return strings.EqualFold(e, s.Text) }) {
			return invalid("parameter %s: %s is not one of PostgreSQL's values %s", s.Name, show(s.Text), strings.Join(p.EnumVals, ", "))
		}
	case "string":
		if p.Context != "user" && p.Context != "superuser" {
			break
		}
		// The server's own check: set it for a transaction that is
		// rolled back.
		tx, err := c.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("check %s: %w", s.Name, err)
		}
		_, err = tx.ExecContext(ctx, "SELECT set_config($1, $2, true)", s.Name, s.Text)
		if rerr := tx.Rollback(); rerr != nil && err == nil {
			return fmt.Errorf("check %s: %w", s.Name, rerr)
		}
		if err != nil {
			if code := sqlState(err); code == "22023" || code == "22P02" || code == "42704" {
				return invalid("parameter %s: PostgreSQL refused %s: %s", s.Name, show(s.Text), pgMessage(err))
			}
			return fmt.Errorf("check %s: %w", s.Name, err)
		}
	}
	return nil
}

func unitSuffix(unit string) string {
	if unit == "" {
		return ""
	}
	return " (unit " + unit + ")"
}

// reload has the server re-read its configuration files and waits until
// this session has (pg_conf_load_time moves): the postmaster reloads
// before it signals the sessions, so new sessions see the change too.
func reload(ctx context.Context, c *sql.Conn) error {
	var before time.Time
	if err := c.QueryRowContext(ctx, "SELECT pg_conf_load_time()").Scan(&before); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	var ok bool
	if err := c.QueryRowContext(ctx, "SELECT pg_reload_conf()").Scan(&ok); err != nil || !ok {
		return fmt.Errorf("reload: pg_reload_conf: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var now time.Time
		if err := c.QueryRowContext(ctx, "SELECT pg_conf_load_time()").Scan(&now); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		if now.After(before) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reload: the server did not re-read its configuration within 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Configuration reports the settings of postgresql.conf as rendered at
// prepare for the flavor, the defaults layer (the image's template for
// the flavor), the log switches and the group, as the server
// reads them (later files win). Values are as written: memory sizes in
// the base file carry their unit ("128MB"), a group's are in the server's
// unit.
func (m *Manager) Configuration(ctx context.Context) (wire.EffectiveConfiguration, error) {
	layers, err := datastore.ReadLayers(m.lc, parseConf, m.cfg.ConfigFile, defaultsFile(m.cfg), logSettingsFile(m.cfg), m.cfg.OverridesFile)
	if err != nil {
		return wire.EffectiveConfiguration{}, err
	}
	return wire.EffectiveConfiguration{Values: datastore.EffectiveValues(layers...)}, nil
}

// parseConf reads name = value lines of a postgresql.conf the agent
// wrote; include directives are not settings.
func parseConf(data []byte) map[string]string {
	out := parseOverrides(data)
	for k := range out {
		if strings.HasPrefix(k, "include") {
			delete(out, k)
		}
	}
	return out
}
