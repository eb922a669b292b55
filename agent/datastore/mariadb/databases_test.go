package mariadb_test

import (
	"strings"
	"testing"

	"strata/agent/wire"
)

func TestCreateListDeleteDatabases(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	err := m.CreateDatabases(ctx, []wire.Database{
		{Name: "db_one"},
		{Name: "db-two", CharacterSet: "utf8mb4", Collation: "utf8mb4_bin"},
		{Name: "db3", Collation: "latin1_swedish_ci"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range []string{"db_one", "db-two", "db3"} {
			m.DeleteDatabase(ctx, n)
		}
	})
	dbs, err := m.ListDatabases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]wire.Database{}
	for _, d := range dbs {
		got[d.Name] = d
		if d.Name == "mysql" || d.Name == "information_schema" || d.Name == "performance_schema" || d.Name == "sys" {
			t.Fatalf("system database listed: %s", d.Name)
		}
	}
	if got["db-two"].Collation != "utf8mb4_bin" || got["db3"].CharacterSet != "latin1" || got["db_one"].Name == "" {
		t.Fatalf("databases = %+v", dbs)
	}
	err = m.CreateDatabases(ctx, []wire.Database{{Name: "db_one"}})
	wantCode(t, err, wire.CodeAlreadyExists, "db_one")

	if err := m.DeleteDatabase(ctx, "db3"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, m.DeleteDatabase(ctx, "db3"), wire.CodeNotFound, "db3")
}

func TestBadDatabaseInputIsRejectedAndChangesNothing(t *testing.T) {
	inst := sharedServer(t)
	m, ctx := inst.Manager, ctxT(t)
	if err := m.CreateDatabases(ctx, []wire.Database{{Name: "existing"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.DeleteDatabase(ctx, "existing") })
	before := snapshot(t, inst)

	create := []struct {
		name string
		dbs  []wire.Database
		code wire.ErrorCode
		want string
	}{
		{"sql injection", []wire.Database{{Name: "x'; DROP DATABASE mysql; --"}}, wire.CodeInvalidArgument, "database name"},
		{"backtick", []wire.Database{{Name: "a`b"}}, wire.CodeInvalidArgument, "database name"},
		{"backtick escape", []wire.Database{{Name: "x`; DROP DATABASE existing; --"}}, wire.CodeInvalidArgument, "database name"},
		{"NUL", []wire.Database{{Name: "a\x00b"}}, wire.CodeInvalidArgument, `a\x00b`},
		{"too long", []wire.Database{{Name: strings.Repeat("d", 65)}}, wire.CodeInvalidArgument, "65 characters"},
		{"empty", []wire.Database{{Name: ""}}, wire.CodeInvalidArgument, "empty"},
		{"slash", []wire.Database{{Name: "../etc"}}, wire.CodeInvalidArgument, "database name"},
		{"unicode", []wire.Database{{Name: "dаta"}}, wire.CodeInvalidArgument, "database name"}, // Cyrillic а
		{"system", []wire.Database{{Name: "MySQL"}}, wire.CodeInvalidArgument, "system database"},
		{"no list", nil, wire.CodeInvalidArgument, "no databases"},
		{"listed twice", []wire.Database{{Name: "dup"}, {Name: "dup"}}, wire.CodeInvalidArgument, "twice"},
		{"bad charset chars", []wire.Database{{Name: "ok1", CharacterSet: "utf8'"}}, wire.CodeInvalidArgument, "character set"},
		{"unknown charset", []wire.Database{{Name: "ok1", CharacterSet: "klingon"}}, wire.CodeInvalidArgument, "unknown character set"},
		{"unknown collation", []wire.Database{{Name: "ok1", Collation: "klingon_ci"}}, wire.CodeInvalidArgument, "unknown collation"},
		{"collation of another charset", []wire.Database{{Name: "ok1", CharacterSet: "latin1", Collation: "utf8mb4_bin"}}, wire.CodeInvalidArgument, "belongs to character set utf8mb4"},
		// All or nothing: a good name first, then a bad one.
		{"good then bad", []wire.Database{{Name: "good_first"}, {Name: "bad'"}}, wire.CodeInvalidArgument, "bad'"},
		{"good then existing", []wire.Database{{Name: "good_first"}, {Name: "existing"}}, wire.CodeAlreadyExists, "existing"},
	}
	for _, tc := range create {
		t.Run("create/"+tc.name, func(t *testing.T) {
			wantCode(t, m.CreateDatabases(ctx, tc.dbs), tc.code, tc.want)
			assertUnchanged(t, inst, before)
		})
	}
	many := make([]wire.Database, wire.MaxItemsPerOp+1)
	for i := range many {
		many[i].Name = "many" + strings.Repeat("x", i%10) + string(rune('a'+i%26))
	}
	wantCode(t, m.CreateDatabases(ctx, many), wire.CodeInvalidArgument, "at most")
	assertUnchanged(t, inst, before)

	for _, name := range []string{"x'; DROP DATABASE existing; --", "existing`", "mysql", "information_schema", "missing", strings.Repeat("e", 200)} {
		err := m.DeleteDatabase(ctx, name)
		if err == nil {
			t.Fatalf("delete %q accepted", name)
		}
		assertUnchanged(t, inst, before)
	}
	wantCode(t, m.DeleteDatabase(ctx, "missing"), wire.CodeNotFound, "missing")
}
