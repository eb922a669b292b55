package postgresql_test

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
		{Name: "db-two", CharacterSet: "utf8", Collation: "C.utf8"},
		{Name: "Db3", CharacterSet: "LATIN1"},
		{Name: "db4", Collation: "POSIX"}, // the server spells it C
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range []string{"db_one", "db-two", "Db3", "db4"} {
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
		if d.Name == "postgres" || strings.HasPrefix(d.Name, "template") {
			t.Fatalf("system database listed: %s", d.Name)
		}
	}
	if got["db-two"].CharacterSet != "UTF8" || got["db-two"].Collation != "C.utf8" ||
		got["Db3"].CharacterSet != "LATIN1" || got["Db3"].Collation != "C" ||
		got["db4"].Collation != "C" || got["db_one"].CharacterSet != "UTF8" || len(got) != 4 {
		t.Fatalf("databases = %+v", dbs)
	}
	// Names are case-sensitive (always quoted): Db3 is not db3.
	wantCode(t, m.DeleteDatabase(ctx, "db3"), wire.CodeNotFound, "db3")
	// PUBLIC may not connect to a new database.
	adm := admin(t, inst, "postgres")
	var publicConnect bool
	adm.QueryRow("SELECT has_database_privilege('public', 'db_one', 'CONNECT')").Scan(&publicConnect)
	if publicConnect {
		t.Fatal("PUBLIC keeps CONNECT on a new database")
	}

	wantCode(t, m.CreateDatabases(ctx, []wire.Database{{Name: "db_one"}}), wire.CodeAlreadyExists, "db_one")
	if err := m.DeleteDatabase(ctx, "Db3"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, m.DeleteDatabase(ctx, "Db3"), wire.CodeNotFound, "Db3")

	// A database with a session open is still dropped.
	if _, err := connect(t, inst, "postgres", "", "db4"); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteDatabase(ctx, "db4"); err != nil {
		t.Fatalf("drop with a session open: %v", err)
	}
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
		{"sql injection", []wire.Database{{Name: "x'; DROP DATABASE postgres; --"}}, wire.CodeInvalidArgument, "database name"},
		{"double quote", []wire.Database{{Name: `a"b`}}, wire.CodeInvalidArgument, "database name"},
		{"quote escape", []wire.Database{{Name: `x"; DROP DATABASE existing; --`}}, wire.CodeInvalidArgument, "database name"},
		{"NUL", []wire.Database{{Name: "a\x00b"}}, wire.CodeInvalidArgument, `a\x00b`},
		{"too long", []wire.Database{{Name: strings.Repeat("d", 64)}}, wire.CodeInvalidArgument, "64 characters"},
		{"empty", []wire.Database{{Name: ""}}, wire.CodeInvalidArgument, "empty"},
		{"slash", []wire.Database{{Name: "../etc"}}, wire.CodeInvalidArgument, "database name"},
		{"unicode", []wire.Database{{Name: "dаta"}}, wire.CodeInvalidArgument, "database name"}, // Cyrillic а
		{"system", []wire.Database{{Name: "Template1"}}, wire.CodeInvalidArgument, "system database"},
		{"postgres", []wire.Database{{Name: "postgres"}}, wire.CodeInvalidArgument, "system database"},
		{"no list", nil, wire.CodeInvalidArgument, "no databases"},
		{"listed twice", []wire.Database{{Name: "dup"}, {Name: "dup"}}, wire.CodeInvalidArgument, "twice"},
		{"bad encoding chars", []wire.Database{{Name: "ok1", CharacterSet: "utf8'"}}, wire.CodeInvalidArgument, "encoding"},
		{"unknown encoding", []wire.Database{{Name: "ok1", CharacterSet: "klingon"}}, wire.CodeInvalidArgument, "unknown encoding"},
		{"client-only encoding", []wire.Database{{Name: "ok1", CharacterSet: "SJIS"}}, wire.CodeInvalidArgument, "clients only"},
		{"client-only alias", []wire.Database{{Name: "ok1", CharacterSet: "shift_jis_2004"}}, wire.CodeInvalidArgument, "clients only"},
		{"bad collation chars", []wire.Database{{Name: "ok1", Collation: "C' TEMPLATE x"}}, wire.CodeInvalidArgument, "collation"},
		{"unknown collation", []wire.Database{{Name: "ok1", Collation: "tlh_KL.UTF-8"}}, wire.CodeInvalidArgument, "unknown collation"},
		{"collation of another encoding", []wire.Database{{Name: "ok1", CharacterSet: "LATIN1", Collation: "C.utf8"}}, wire.CodeInvalidArgument, "is for encoding UTF8, not LATIN1"},
		// All or nothing: a good name first, then a bad one.
		{"good then bad", []wire.Database{{Name: "good_first"}, {Name: "bad'"}}, wire.CodeInvalidArgument, "bad'"},
		{"good then existing", []wire.Database{{Name: "good_first"}, {Name: "existing"}}, wire.CodeAlreadyExists, "existing"},
		{"good then bad collation", []wire.Database{{Name: "good_first"}, {Name: "ok1", Collation: "nope"}}, wire.CodeInvalidArgument, "unknown collation"},
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

	for _, name := range []string{"x'; DROP DATABASE existing; --", `existing"`, "postgres", "template0", "missing", strings.Repeat("e", 200)} {
		if err := m.DeleteDatabase(ctx, name); err == nil {
			t.Fatalf("delete %q accepted", name)
		}
		assertUnchanged(t, inst, before)
	}
	wantCode(t, m.DeleteDatabase(ctx, "missing"), wire.CodeNotFound, "missing")
}
