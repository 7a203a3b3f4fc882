package prom

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestRegisterShares: a second identical collector becomes the first
// one; a conflicting one is an error.
func TestRegisterShares(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := CounterVec("x_total", "X.", "k")
	b := CounterVec("x_total", "X.", "k")
	if err := Register(reg, &a); err != nil {
		t.Fatal(err)
	}
	if err := Register(reg, &b); err != nil || b != a {
		t.Fatalf("second Register: %v, shares the first: %v", err, b == a)
	}
	c := Counter("x_total", "Other help.")
	if err := Register(reg, &c); err == nil {
		t.Fatal("a conflicting collector registered")
	}
}
