package postgresql

import (
	"context"
	"fmt"
	"strings"

	"strata/agent/datastore"
	"strata/agent/wire"
)

// ListDatabases lists user databases (postgres and the templates left
// out) with their encoding and collation.
func (m *Manager) ListDatabases(ctx context.Context) ([]wire.Database, error) {
	if err := m.ready(ctx); err != nil {
		return nil, err
	}
	return datastore.QueryDatabases(ctx, m.conn(),
		"SELECT datname, pg_encoding_to_char(encoding), datcollate FROM pg_database WHERE NOT datistemplate ORDER BY datname",
		systemDatabases)
}

// CreateDatabases creates all of dbs or none: every name, encoding and
// collation is checked (and none may exist) before the first CREATE, and a
// failure part-way drops what this call created. CharacterSet is the
// encoding, Collation the locale (LC_COLLATE and LC_CTYPE). A new database
// admits only the users granted access to it: CONNECT and TEMPORARY are
// taken from PUBLIC.
func (m *Manager) CreateDatabases(ctx context.Context, dbs []wire.Database) error {
	if err := checkDatabases(dbs); err != nil {
		return err
	}
	if err := m.ready(ctx); err != nil {
		return err
	}
	var stmts []string
	for i := range dbs {
		d := &dbs[i]
		if err := m.checkLocale(ctx, d); err != nil {
			return err
		}
		exists, err := m.databaseExists(ctx, d.Name)
		if err != nil {
			return err
		}
		if exists {
			return wire.Errorf(wire.CodeAlreadyExists, "database %s exists already", show(d.Name))
		}
		// template0: a different encoding or locale than template1's is
		// only allowed from it.
		s := "CREATE DATABASE " + quoteIdent(d.Name) + " TEMPLATE template0"
		if d.CharacterSet != "" {
			s += " ENCODING '" + d.CharacterSet + "'"
		}
		if d.Collation != "" {
			s += " LC_COLLATE '" + d.Collation + "' LC_CTYPE '" + d.Collation + "'"
		}
		stmts = append(stmts, s)
	}
	for i, s := range stmts {
		err := m.exec(ctx, s, "REVOKE CONNECT, TEMPORARY ON DATABASE "+quoteIdent(dbs[i].Name)+" FROM PUBLIC")
		if err != nil {
			for _, d := range dbs[:i+1] {
				if derr := m.exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+quoteIdent(d.Name)+" WITH (FORCE)"); derr != nil {
					m.log.Error("could not drop a database after a failed create", "database", d.Name, "err", derr)
				}
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
		if err := checkEncoding(d.Name, d.CharacterSet); err != nil {
			return err
		}
		if err := checkCollation(d.Name, d.Collation); err != nil {
			return err
		}
	}
	return nil
}

// checkLocale verifies the encoding and collation against the server's
// catalogs: the encoding must exist, the collation must be a libc locale
// the server knows, and the two must fit together. The encoding is
// normalised to the server's spelling; a non-UTF-8 encoding without a
// collation gets the C locale, which fits every encoding.
func (m *Manager) checkLocale(ctx context.Context, d *wire.Database) error {
	enc := "UTF8"
	if d.CharacterSet != "" {
		var id int
		if err := m.conn().QueryRowContext(ctx, "SELECT pg_char_to_encoding($1)", d.CharacterSet).Scan(&id); err != nil {
			return fmt.Errorf("check encoding: %w", err)
		}
		if id < 0 {
			return invalid("database %s: unknown encoding %s", show(d.Name), show(d.CharacterSet))
		}
		if err := m.conn().QueryRowContext(ctx, "SELECT pg_encoding_to_char($1)", id).Scan(&enc); err != nil {
			return fmt.Errorf("check encoding: %w", err)
		}
		if clientOnlyEncodings[enc] {
			return invalid("database %s: encoding %s is for clients only; PostgreSQL cannot store it", show(d.Name), enc)
		}
		d.CharacterSet = enc
	}
	if d.Collation == "" {
		if enc != "UTF8" && enc != "SQL_ASCII" {
			d.Collation = "C"
		}
		return nil
	}
	if d.Collation == "C" || d.Collation == "POSIX" {
		return nil
	}
	// A locale may be named as pg_collation names it (en_US) or as libc
	// does (en_US.utf8); the database gets libc's name.
	rows, err := m.conn().QueryContext(ctx,
		`SELECT collcollate, pg_encoding_to_char(collencoding) FROM pg_collation
		 WHERE collprovider = 'c' AND (collname = $1 OR collcollate = $1) AND collcollate = collctype AND collencoding <> -1`,
		d.Collation)
	if err != nil {
		return fmt.Errorf("check collation: %w", err)
	}
	defer rows.Close()
	var encs []string
	for rows.Next() {
		var locale, e string
		if err := rows.Scan(&locale, &e); err != nil {
			return fmt.Errorf("check collation: %w", err)
		}
		if (e == enc || enc == "SQL_ASCII") && collationPattern.MatchString(locale) {
			d.Collation = locale
			return rows.Err()
		}
		encs = append(encs, e)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check collation: %w", err)
	}
	if len(encs) == 0 {
		return invalid("database %s: unknown collation %s (the guest has no such locale)", show(d.Name), show(d.Collation))
	}
	return invalid("database %s: collation %s is for encoding %s, not %s", show(d.Name), d.Collation, strings.Join(encs, ", "), enc)
}

func (m *Manager) databaseExists(ctx context.Context, name string) (bool, error) {
	var n int
	if err := m.conn().QueryRowContext(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		return false, fmt.Errorf("look up database: %w", err)
	}
	return n > 0, nil
}

// DeleteDatabase drops a user database, ending the sessions connected to
// it (as an instance's owner asked for the database to go).
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
	return m.exec(ctx, "DROP DATABASE "+quoteIdent(name)+" WITH (FORCE)")
}
