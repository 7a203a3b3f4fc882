package edge

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: the
// edge API, its proxy's upstream connections, the hosts under it and the
// SQL pools must all be closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
