package mariadb

import (
	"context"
	"database/sql"
	"fmt"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// ListDatabases lists user databases (system schemas left out).
func (m *Manager) ListDatabases(ctx context.Context) ([]wire.Database, error) {
	if err := m.ready(ctx); err != nil {
		return nil, err
	}
	return datastore.QueryDatabases(ctx, m.conn(),
		"SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
		systemDatabases)
}

// CreateDatabases creates all of dbs or none: every name, character set
// and collation is checked (and none may exist) before the first CREATE,
// and a failure part-way drops what this call created.
func (m *Manager) CreateDatabases(ctx context.Context, dbs []wire.Database) error {
	if err := checkDatabases(dbs); err != nil {
		return err
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	var stmts []string
	for _, d := range dbs {
		if err := m.checkCollation(ctx, &d); err != nil {
			return err
		}
		exists, err := m.databaseExists(ctx, d.Name)
		if err != nil {
			return err
		}
		if exists {
			return wire.Errorf(wire.CodeAlreadyExists, "database %s exists already", show(d.Name))
		}
		s := "CREATE DATABASE " + quoteIdent(d.Name)
		if d.CharacterSet != "" {
			s += " CHARACTER SET " + d.CharacterSet
		}
		if d.Collation != "" {
			s += " COLLATE " + d.Collation
		}
		stmts = append(stmts, s)
	}
	for i, s := range stmts {
		if _, err := m.conn().ExecContext(ctx, s); err != nil {
			for _, d := range dbs[:i] {
				m.exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+quoteIdent(d.Name))
			}
			return fmt.Errorf("create database %s: %w", show(dbs[i].Name), err)
		}
	}
	return nil
}

func checkDatabases(dbs []wire.Database) error {
	if err := datastore.CheckListLength("databases", len(dbs)); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, d := range dbs {
		if err := checkDatabaseName(d.Name); err != nil {
			return err
		}
		if seen[d.Name] {
			return invalid("database %s is listed twice", show(d.Name))
		}
		seen[d.Name] = true
		if err := checkCharset("character set", d.CharacterSet); err != nil {
			return err
		}
		if err := checkCharset("collation", d.Collation); err != nil {
			return err
		}
	}
	return nil
}

// checkCollation verifies the character set and collation against the
// server's own tables and fills in the character set of a bare collation.
func (m *Manager) checkCollation(ctx context.Context, d *wire.Database) error {
	switch {
	case d.Collation != "":
		var cs string
		err := m.conn().QueryRowContext(ctx,
			"SELECT CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME = ?", d.Collation).Scan(&cs)
		if err == sql.ErrNoRows {
			return invalid("database %s: unknown collation %s", show(d.Name), show(d.Collation))
		}
		if err != nil {
			return fmt.Errorf("check collation: %w", err)
		}
		if d.CharacterSet != "" && d.CharacterSet != cs {
			return invalid("database %s: collation %s belongs to character set %s, not %s", show(d.Name), d.Collation, cs, d.CharacterSet)
		}
		d.CharacterSet = cs
	case d.CharacterSet != "":
		var n int
		if err := m.conn().QueryRowContext(ctx,
			"SELECT COUNT(*) FROM information_schema.CHARACTER_SETS WHERE CHARACTER_SET_NAME = ?", d.CharacterSet).Scan(&n); err != nil {
			return fmt.Errorf("check character set: %w", err)
		}
		if n == 0 {
			return invalid("database %s: unknown character set %s", show(d.Name), show(d.CharacterSet))
		}
	}
	return nil
}

func (m *Manager) databaseExists(ctx context.Context, name string) (bool, error) {
	var n int
	if err := m.conn().QueryRowContext(ctx,
		"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name).Scan(&n); err != nil {
		return false, fmt.Errorf("look up database: %w", err)
	}
	return n > 0, nil
}

// DeleteDatabase drops a user database.
func (m *Manager) DeleteDatabase(ctx context.Context, name string) error {
	if err := checkDatabaseName(name); err != nil {
		return err
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	exists, err := m.databaseExists(ctx, name)
	if err != nil {
		return err
	}
	if !exists {
		return wire.Errorf(wire.CodeNotFound, "database %s does not exist", show(name))
	}
	return m.exec(ctx, "DROP DATABASE "+quoteIdent(name))
}
