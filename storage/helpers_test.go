package storage

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines in the whole test binary, the
// storagetest suite (contract_test.go) included.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
