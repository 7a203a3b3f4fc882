package analytics

import (
	"maps"
	"slices"
	"sync"

	"github.com/edgeshard/edgeshard/abi"
)

// Recorder is an in-memory Sink for tests and the conformance kit: Write
// validates like every Sink and records a copy of the point by dataset. The
// zero value is ready to use; it is safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	points map[string][]abi.DataPoint
}

// Write validates p and records a copy of it under dataset.
func (r *Recorder) Write(dataset string, p abi.DataPoint) error {
	if err := validateWrite(dataset, p); err != nil {
		return err
	}
	c := clonePoint(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.points == nil {
		r.points = make(map[string][]abi.DataPoint)
	}
	r.points[dataset] = append(r.points[dataset], c)
	return nil
}

// Points returns copies of the points recorded under dataset, in write
// order; nil if none.
func (r *Recorder) Points(dataset string) []abi.DataPoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	src := r.points[dataset]
	if len(src) == 0 {
		return nil
	}
	out := make([]abi.DataPoint, len(src))
	for i, p := range src {
		out[i] = clonePoint(p)
	}
	return out
}

// Datasets returns the datasets written to, sorted.
func (r *Recorder) Datasets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.points))
}

// Reset forgets every recorded point.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.points = nil
}

var _ Sink = (*Recorder)(nil)
