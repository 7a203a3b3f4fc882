package host

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

// TestCompareShardsIsATotalOrder: digits first by value, then bytewise;
// antisymmetric and transitive over a mixed sample, so a page cursor never
// skips or repeats a shard.
func TestCompareShardsIsATotalOrder(t *testing.T) {
	names := []string{"2", "10", "1a", "9", "010", "007", "7", "a", "A", "ab", "b", "0", "100", "user-1", "user-10", "user-2"}
	for _, a := range names {
		for _, b := range names {
			if sgn(CompareShards(a, b)) != -sgn(CompareShards(b, a)) || (CompareShards(a, b) == 0) != (a == b) {
				t.Fatalf("CompareShards(%q, %q) = %d, reverse %d", a, b, CompareShards(a, b), CompareShards(b, a))
			}
			for _, c := range names {
				if CompareShards(a, b) < 0 && CompareShards(b, c) < 0 && CompareShards(a, c) >= 0 {
					t.Fatalf("not transitive: %q < %q < %q but not %q < %q", a, b, c, a, c)
				}
			}
		}
	}
	sorted := slices.Clone(names)
	slices.SortFunc(sorted, CompareShards)
	want := []string{"0", "2", "7", "9", "10", "007", "010", "100", "1a", "A", "a", "ab", "b", "user-1", "user-10", "user-2"}
	if !slices.Equal(sorted, want) {
		t.Fatalf("sorted = %q, want %q", sorted, want)
	}
}

func sgn(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// TestLogTapBounds: a shard's ring keeps its newest lines within its byte
// budget, a line is cut to its bounds, the tap holds rings for tapShards
// shards at most (dropping the one written longest ago), and since
// returns what follows a seq.
func TestLogTapBounds(t *testing.T) {
	var tap logTap
	a := storage.ShardID{Namespace: "N", Name: "a"}
	for i := 0; i < 5000; i++ {
		tap.add(a, LogLine{Level: "info", Source: "guest", Message: fmt.Sprintf("line %d", i), Fields: []abi.Header{{Name: "k", Value: strings.Repeat("v", 100)}}})
	}
	lines, last := tap.since(a, 0)
	if last != 5000 || lines[len(lines)-1].Message != "line 4999" || len(lines) >= 5000 {
		t.Fatalf("%d lines, last %d (%q)", len(lines), last, lines[len(lines)-1].Message)
	}
	size := 0
	for i, l := range lines {
		size += lineSize(l)
		if i > 0 && l.Seq != lines[i-1].Seq+1 {
			t.Fatal("the ring kept a gap")
		}
	}
	if size > tapRingBytes {
		t.Fatalf("ring holds %d bytes, budget %d", size, tapRingBytes)
	}
	if more, l := tap.since(a, last); more != nil || l != last {
		t.Fatalf("since the last line: %d lines, %d", len(more), l)
	}
	if more, _ := tap.since(a, last-3); len(more) != 3 || more[0].Seq != last-2 {
		t.Fatalf("since last-3: %+v", more)
	}

	// One enormous line is cut, on a rune boundary.
	big := strings.Repeat("é", 10000)
	fields := make([]abi.Header, 100)
	for i := range fields {
		fields[i] = abi.Header{Name: strings.Repeat("n", 1000), Value: big}
	}
	b := storage.ShardID{Namespace: "N", Name: "b"}
	tap.add(b, LogLine{Message: big, Fields: fields})
	got, _ := tap.since(b, 0)
	l := got[0]
	if len(got) != 1 || len(l.Fields) != tapFields || !utf8.ValidString(l.Message) || len(l.Message) > 2*tapFieldBytes+len("…") ||
		len(l.Fields[0].Value) > tapFieldBytes+len("…") || len(l.Fields[0].Name) > 64+len("…") || !utf8.ValidString(l.Fields[0].Value) {
		t.Fatalf("cut line: message %d bytes, %d fields, field %d/%d bytes", len(l.Message), len(l.Fields), len(l.Fields[0].Name), len(l.Fields[0].Value))
	}

	// Rings for at most tapShards shards; a and b, written first, go first.
	for i := 0; i < tapShards; i++ {
		tap.add(storage.ShardID{Namespace: "N", Name: fmt.Sprint("s", i)}, LogLine{Message: "hi"})
	}
	if len(tap.rings) != tapShards {
		t.Fatalf("%d rings, want %d", len(tap.rings), tapShards)
	}
	if l, _ := tap.since(a, 0); l != nil {
		t.Fatal("the stalest ring was kept")
	}
	if l, _ := tap.since(storage.ShardID{Namespace: "N", Name: "s0"}, 0); len(l) != 1 {
		t.Fatal("a fresh ring was dropped")
	}
}
