package wire

import "testing"

func TestEveryKindIsClassified(t *testing.T) {
	if err := CheckClasses(); err != nil {
		t.Fatal(err)
	}
	// The check itself fails on a kind without a class.
	Kinds = append(Kinds, "backup_not_classified")
	defer func() { Kinds = Kinds[:len(Kinds)-1] }()
	if err := CheckClasses(); err == nil {
		t.Fatal("a kind without a class passed the check")
	}
}

func TestRerunnableOnlyForIdempotentKindsCutShort(t *testing.T) {
	interrupted := Result{Error: Errorf(CodeInterrupted, "cut")}
	unavailable := Result{Error: Errorf(CodeUnavailable, "down")}
	exists := Result{Error: Errorf(CodeAlreadyExists, "there")}
	cases := []struct {
		kind Kind
		res  Result
		want bool
	}{
		{KindCreateDatabases, interrupted, true},
		{KindCreateDatabases, unavailable, true},
		{KindCreateDatabases, exists, false},
		{KindCreateDatabases, Result{}, false},
		{KindPrepare, interrupted, true},
		{KindPrepare, unavailable, false}, // prepare starts the server itself
		{KindResizeFilesystem, interrupted, true},
		{"restore_from_somewhere", interrupted, false}, // unknown: never re-run
	}
	for _, c := range cases {
		if got := Rerunnable(c.kind, c.res); got != c.want {
			t.Errorf("Rerunnable(%s, %v) = %v, want %v", c.kind, c.res.Error, got, c.want)
		}
	}
	Classes["not_idempotent_test_kind"] = Class{Mutates: true}
	defer delete(Classes, "not_idempotent_test_kind")
	if Rerunnable("not_idempotent_test_kind", interrupted) {
		t.Error("a kind that is not idempotent would be re-run")
	}
}

func TestOperationAttemptIsBounded(t *testing.T) {
	op := Operation{ID: "op-1", Kind: KindRestart, Attempt: MaxAttempts}
	if op.Validate() == nil {
		t.Fatalf("attempt %d accepted", op.Attempt)
	}
	op.Attempt = MaxAttempts - 1
	if err := op.Validate(); err != nil {
		t.Fatal(err)
	}
	if (Operation{ID: "a", Kind: KindRestart, Attempt: 2}).Digest() != (Operation{ID: "b", Kind: KindRestart}).Digest() {
		t.Fatal("the attempt changed the digest: a re-run would look like different content")
	}
}

func TestChaosPlansParse(t *testing.T) {
	plan := "controller@create.booted, qemu@guest.prepare.users#2,agent@guest.op.restart"
	e, err := ParseChaos(plan)
	if err != nil || len(e) != 3 || e[1].Nth != 2 || !e[1].Guest() || e[0].Guest() {
		t.Fatalf("%+v %v", e, err)
	}
	if got := FormatChaos(e); got != "controller@create.booted,qemu@guest.prepare.users#2,agent@guest.op.restart" {
		t.Fatalf("formatted %q", got)
	}
	// The switchover's and failover's points (promote.go) are known.
	e, err = ParseChaos("controller@promote.fenced,controller@promote.promoted#2,qemu@promote.promoted")
	if err != nil || len(e) != 3 || e[0].Point != "promote.fenced" || e[1].Point != "promote.promoted" || e[1].Nth != 2 || e[2].Target != ChaosQemu {
		t.Fatalf("the promote points: %+v %v", e, err)
	}
	for _, bad := range []string{"controller", "nobody@create.booted", "controller@guest.op.x", "agent@create.booted", "qemu@x#0", "qemu@X Y",
		"controller@promote.fence", "qemu@promote.no-such-step"} {
		if _, err := ParseChaos(bad); err == nil {
			t.Errorf("plan %q accepted", bad)
		}
	}
}
