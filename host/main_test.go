package host_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind once
// its hosts are closed: actors, the alarm scheduler, the group committer,
// Badger's and wazero's workers must all be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
