//go:build !race

package agentendpoint_test

const raceEnabled = false
