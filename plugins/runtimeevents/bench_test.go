//go:build !wasip1

package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/plugins/proto/events"
)

func benchBody(n int) string {
	var s strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&s, "0b6f7c8e-5d3a-4e7b-9a51-2f0c1d9e%04d\tcap-%d\trun-9\trun.finished\t%d\t%d\t{\"i\":%d}\n", i, i%7, 1767225600000+int64(i), 1767225600500+int64(i), i)
	}
	return s.String()
}

// BenchmarkParseBody100 is the guest's validation of a 100-event /enqueue
// body, run natively.
func BenchmarkParseBody100(b *testing.B) {
	body := benchBody(100)
	b.ReportAllocs()
	for b.Loop() {
		if _, bad := ParseBody(body, MaxPerEnqueue); bad != nil {
			b.Fatal(bad)
		}
	}
}

// BenchmarkFlushArgs100 is the guest's building of a flush's inserts for
// 100 buffered events.
func BenchmarkFlushArgs100(b *testing.B) {
	lines, _ := ParseBody(benchBody(100), MaxPerEnqueue)
	b.ReportAllocs()
	for b.Loop() {
		args := make([]any, 0, events.RowsPerInsert*events.NumFields)
		for i, l := range lines {
			ev, _ := events.ParseLine(l)
			if i%events.RowsPerInsert == 0 {
				_ = events.InsertSQL(events.RowsPerInsert)
				args = args[:0]
			}
			args = ev.AppendArgs(args)
		}
	}
}
