//go:build race

package agentendpoint_test

// raceEnabled: the test binary runs under the race detector, so the agent
// builds it starts are race-instrumented too.
const raceEnabled = true
