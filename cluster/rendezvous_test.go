package cluster

import (
	"fmt"
	"math"
	"testing"
)

// TestPlaceSpreadsAndMovesLittle: keys spread evenly over the members, a
// join moves only the keys the newcomer wins (about 1/N), and a leave
// moves only the leaver's keys.
func TestPlaceSpreadsAndMovesLittle(t *testing.T) {
	const keys = 20000
	three := []string{"n-a", "n-b", "n-c"}
	four := append([]string{"n-d"}, three...) // order does not matter
	count := map[string]int{}
	moved := 0
	for i := range keys {
		k := fmt.Sprintf("COUNTER/%d", i)
		a, b := Place(k, three), Place(k, four)
		count[a]++
		if a != b {
			if b != "n-d" {
				t.Fatalf("key %s moved from %s to %s, not to the newcomer", k, a, b)
			}
			moved++
		}
		if c := Place(k, []string{"n-c", "n-a", "n-b"}); c != a {
			t.Fatalf("key %s: placement depends on member order", k)
		}
	}
	for m, n := range count {
		if math.Abs(float64(n)-keys/3.0) > keys*0.03 {
			t.Errorf("member %s has %d of %d keys, want about a third", m, n, keys)
		}
	}
	if frac := float64(moved) / keys; math.Abs(frac-0.25) > 0.03 {
		t.Errorf("a join moved %.3f of the keys, want about 1/4", frac)
	}
	if Place("k", nil) != "" {
		t.Error("no member: want \"\"")
	}
}
