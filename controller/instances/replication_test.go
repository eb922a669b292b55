package instances

import "testing"

// The distance in transactions is summed over the source's domains, never
// negative in one, and refused for malformed or empty source positions.
func TestTransactionsBehind(t *testing.T) {
	for _, tc := range []struct {
		source, replica string
		want            uint64
		ok              bool
	}{
		{"0-1-100", "0-1-42", 58, true},
		{"0-1-100", "0-1-100", 0, true},
		{"0-1-100", "0-1-120", 0, true},                 // read later than the source's report
		{"0-2-100", "0-1-90", 10, true},                 // a new source continues the domain's count
		{"0-1-10,1-3-7", "0-1-8", 9, true},              // a domain the replica has none of
		{"0-1-10,1-3-7", "0-1-10,1-3-5,2-4-9", 2, true}, // a domain only the replica has is not counted
		{"0-1-5", "", 5, true},
		{"", "0-1-5", 0, false},
		{"0-1-x", "0-1-5", 0, false},
		{"0-1-5", "garbage", 0, false},
	} {
		n, ok := TransactionsBehind(tc.source, tc.replica)
		if n != tc.want || ok != tc.ok {
			t.Errorf("TransactionsBehind(%q, %q) = %d, %v; want %d, %v", tc.source, tc.replica, n, ok, tc.want, tc.ok)
		}
	}
}
