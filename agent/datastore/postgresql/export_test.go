package postgresql

// SetFault makes account updates fail at the named step (see fault) until
// the returned function is called.
func SetFault(f func(step string) error) (restore func()) {
	old := fault
	fault = f
	return func() { fault = old }
}

// ClassifyPastCommits is classifyPastCommits, for its table test.
func ClassifyPastCommits(out string, fence map[uint32]bool) (count, statistics int, first, firstRels string) {
	c := classifyPastCommits(out, fence)
	return c.Count, c.Statistics, c.First, c.FirstRels
}

// ParseLSN is parseLSN, for the tests' positions.
var ParseLSN = parseLSN

// HistorySwitchPoint is historySwitchPoint, for its table test.
var HistorySwitchPoint = historySwitchPoint
