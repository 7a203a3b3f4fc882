//go:build !wasip1

package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/plugins/proto/counters"
)

// BenchmarkParseIncrement100 is the guest's validation and coalescing of
// a 100-delta /increment body, run natively.
func BenchmarkParseIncrement100(b *testing.B) {
	var s strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&s, "post_stats\tpost-%d\tlikes\t1\n", i)
	}
	body := s.String()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, bad := parseIncrement(body); bad != nil {
			b.Fatal(bad)
		}
	}
}

// BenchmarkParseDelta is one delta line.
func BenchmarkParseDelta(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, le := counters.ParseDelta("user_counters\tuser-42\tfollowers\t-1"); le != nil {
			b.Fatal(le)
		}
	}
}
