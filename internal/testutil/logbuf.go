package testutil

import "github.com/edgeshard/edgeshard/internal/harness"

// LogBuffer is harness.LogBuffer, the one log sink of the tests, under the
// name tests already use.
type LogBuffer = harness.LogBuffer
