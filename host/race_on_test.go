//go:build race

package host_test

// raceEnabled: the race detector runs, with its own memory beside the
// Go heap (a shadow of every heap byte, state per goroutine).
const raceEnabled = true
