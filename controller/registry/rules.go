package registry

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"strata/agent/wire"
	"strata/controller/store"
)

// RulesSourceAPI is the rules source recorded when rules are edited one
// by one through the management API (Trove's mgmt parameters routes).
const RulesSourceAPI = "management API"

// SetRule adds a configuration parameter rule to a version, or replaces
// the rule of that name: Trove's mgmt "configuration-parameter" create and
// update. The rule is validated as a rules file entry would be.
func (r *Registry) SetRule(ctx context.Context, versionID string, rule wire.ParameterRule) (Version, error) {
	one, err := json.Marshal(wire.RulesFile{Parameters: []wire.ParameterRule{rule}})
	if err != nil {
		return Version{}, err
	}
	if _, err := wire.ParseRules(one); err != nil {
		return Version{}, invalid("configuration parameter %s: %v", trunc(rule.Name), err)
	}
	return r.editRules(ctx, versionID, func(rules []wire.ParameterRule) ([]wire.ParameterRule, error) {
		for i := range rules {
			if rules[i].Name == rule.Name {
				rules[i] = rule
				return rules, nil
			}
		}
		return append(rules, rule), nil
	})
}

// DeleteRule removes a version's rule by name.
func (r *Registry) DeleteRule(ctx context.Context, versionID, name string) (Version, error) {
	return r.editRules(ctx, versionID, func(rules []wire.ParameterRule) ([]wire.ParameterRule, error) {
		for i := range rules {
			if rules[i].Name == name {
				return append(rules[:i], rules[i+1:]...), nil
			}
		}
		return nil, fmt.Errorf("configuration parameter %q of version %s: %w", trunc(name), versionID, ErrNotFound)
	})
}

func (r *Registry) editRules(ctx context.Context, versionID string, edit func([]wire.ParameterRule) ([]wire.ParameterRule, error)) (Version, error) {
	err := r.DB.InTx(ctx, func(tx *store.Tx) error {
		var raw sql.NullString
		err := tx.QueryRow(ctx, `SELECT rules FROM datastore_versions WHERE id = ?`, versionID).Scan(&raw)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("datastore version %q: %w", trunc(versionID), ErrNotFound)
		}
		if err != nil {
			return err
		}
		var rules []wire.ParameterRule
		if raw.Valid {
			if err := json.Unmarshal([]byte(raw.String), &rules); err != nil {
				return fmt.Errorf("version %s: stored rules: %w", versionID, err)
			}
		}
		if rules, err = edit(rules); err != nil {
			return err
		}
		enc, err := json.Marshal(rules)
		if err != nil {
			return err
		}
		now := store.Millis(r.now())
		_, err = tx.Exec(ctx, `UPDATE datastore_versions SET rules = ?, rules_source = ?, rules_loaded_at = ?, updated_at = ? WHERE id = ?`,
			string(enc), RulesSourceAPI, now, now, versionID)
		return err
	})
	if err != nil {
		return Version{}, err
	}
	return r.Version(ctx, versionID)
}
