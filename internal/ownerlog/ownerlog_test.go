package ownerlog

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func logLine(node, msg, shard string, epoch, from, until int64) string {
	s := fmt.Sprintf(`{"level":"info","component":"cluster","node":%q,"shard":%q,"epoch":%d,"claimed_ns":%d`, node, shard, epoch, from)
	if until > 0 {
		s += fmt.Sprintf(`,"until_ns":%d`, until)
	}
	return s + fmt.Sprintf(`,"time":"x","message":"shard ownership %s"}`, msg)
}

func TestParseAndCheck(t *testing.T) {
	end := time.Unix(0, 1000)
	a := strings.Join([]string{
		logLine("a", "claimed", "B/1", 10, 100, 0),
		`{"level":"info","message":"unrelated"}`,
		logLine("a", "released", "B/1", 10, 100, 200),
		logLine("a", "claimed", "B/2", 11, 150, 0), // killed: open to the end
		logLine("a", "released", "B/1@a", 12, 300, 320),
	}, "\n")
	ivs := Parse("a", a, end)
	if len(ivs) != 3 {
		t.Fatalf("intervals %+v", ivs)
	}
	if iv := Of(ivs, "B/2")[0]; !iv.Open || iv.Until != 1000 {
		t.Fatalf("open interval %+v", iv)
	}
	if iv := Of(ivs, "B/1@a")[0]; iv.From != 300 || iv.Until != 320 {
		t.Fatalf("leftover interval %+v", iv)
	}
	if bad := Check(ivs); len(bad) != 0 {
		t.Fatalf("unexpected: %v", bad)
	}

	// b takes B/1 after a released it: fine; B/2 while a's run still
	// holds it: an overlap; B/1 again with an older epoch: refused.
	b := strings.Join([]string{
		logLine("b", "claimed", "B/1", 20, 250, 0),
		logLine("b", "lost", "B/1", 20, 250, 400),
		logLine("b", "claimed", "B/2", 21, 900, 0),
		logLine("b", "released", "B/2", 21, 900, 950),
		logLine("b", "claimed", "B/1", 5, 500, 0),
	}, "\n")
	bad := Check(append(ivs, Parse("b", b, end)...))
	if len(bad) != 2 || !strings.HasPrefix(bad[0], "epoch not larger: B/1 epoch 5 on b") || !strings.HasPrefix(bad[1], "overlap: B/2 epoch 21 on b") {
		t.Fatalf("check: %q", bad)
	}
}

// An interval that ends after several later ones started is caught
// against each of them, not only against its successor.
func TestCheckLongInterval(t *testing.T) {
	ivs := []Interval{
		{Node: "a", Shard: "S", Epoch: 1, From: 0, Until: 1000},
		{Node: "b", Shard: "S", Epoch: 2, From: 10, Until: 20},
		{Node: "c", Shard: "S", Epoch: 3, From: 30, Until: 40},
	}
	if bad := Check(ivs); len(bad) != 2 {
		t.Fatalf("check: %q", bad)
	}
}
