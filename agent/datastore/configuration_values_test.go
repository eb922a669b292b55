package datastore

import "testing"

func TestEffectiveValuesTypeNumbersAndLetLaterLayersWin(t *testing.T) {
	got := EffectiveValues(
		map[string]string{"a": "1", "b": "'128MB'", "c": "0.9", "d": "ON", "e": "007", "f": "1e3", "g": `"x y"`},
		map[string]string{"a": "250", "h": "-1", "i": "18446744073709547520", "j": "123456789012345678901"},
	)
	// A server's 64-bit unsigned values stay numbers; longer is not a
	// server's number.
	want := map[string]string{"a": "250", "b": `"128MB"`, "c": "0.9", "d": `"ON"`, "e": `"007"`, "f": `"1e3"`, "g": `"x y"`, "h": "-1",
		"i": "18446744073709547520", "j": `"123456789012345678901"`}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if string(got[k]) != v {
			t.Errorf("%s = %s, want %s", k, got[k], v)
		}
	}
}
