package datastore

import "testing"

func TestEffectiveValuesTypeNumbersAndLetLaterLayersWin(t *testing.T) {
	got := EffectiveValues(
		map[string]string{"a": "1", "b": "'128MB'", "c": "0.9", "d": "ON", "e": "007", "f": "1e3", "g": `"x y"`},
		map[string]string{"a": "250", "h": "-1"},
	)
	want := map[string]string{"a": "250", "b": `"128MB"`, "c": "0.9", "d": `"ON"`, "e": `"007"`, "f": `"1e3"`, "g": `"x y"`, "h": "-1"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if string(got[k]) != v {
			t.Errorf("%s = %s, want %s", k, got[k], v)
		}
	}
}
