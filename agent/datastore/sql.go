package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"strata/agent/wire"
)

// Exec runs statements that take no arguments one by one on db.
func Exec(ctx context.Context, db *sql.DB, stmts ...string) error {
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", FirstWords(s), err)
		}
	}
	return nil
}

// FirstWords names a statement in errors without its literals.
func FirstWords(s string) string {
	f := strings.Fields(s)
	if len(f) > 2 {
		f = f[:2]
	}
	return strings.Join(f, " ")
}

// QueryDatabases runs q, which selects each database's name, character
// set and collation, and returns the databases whose lower-case name is
// not in system.
func QueryDatabases(ctx context.Context, db *sql.DB, q string, system map[string]bool) ([]wire.Database, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	defer rows.Close()
	out := []wire.Database{}
	for rows.Next() {
		var d wire.Database
		if err := rows.Scan(&d.Name, &d.CharacterSet, &d.Collation); err != nil {
			return nil, fmt.Errorf("list databases: %w", err)
		}
		if !system[strings.ToLower(d.Name)] {
			out = append(out, d)
		}
	}
	return out, rows.Err()
}
