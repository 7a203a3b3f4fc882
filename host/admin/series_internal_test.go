package admin

import (
	"math"
	"testing"
)

// TestQuantile: the p99 of the observations between two cumulative
// histograms, interpolated within its bucket as histogram_quantile does.
func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	bounds := []float64{0.001, 0.01, 0.1, inf}
	for _, c := range []struct {
		name      string
		cum, prev []float64
		q, want   float64
	}{
		{"nothing observed", []float64{5, 5, 5, 5}, []float64{5, 5, 5, 5}, 0.99, math.NaN()},
		{"all in the first bucket", []float64{100, 100, 100, 100}, nil, 0.99, 0.00099},
		{"only the increase counts", []float64{100, 200, 200, 200}, []float64{100, 100, 100, 100}, 0.5, 0.0055},
		{"in the +Inf bucket: the highest bound", []float64{0, 0, 0, 10}, nil, 0.99, 0.1},
		{"second bucket", []float64{50, 100, 100, 100}, nil, 0.99, 0.001 + 0.009*(99-50)/50},
	} {
		got := quantile(c.q, bounds, c.cum, c.prev)
		if math.IsNaN(c.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-c.want) > 1e-12) {
			t.Errorf("%s: quantile = %v, want %v", c.name, got, c.want)
		}
	}
	if got := rate(3, 10, 1); got != 3 {
		t.Errorf("a counter that went down counts from zero: rate = %v", got)
	}
}
