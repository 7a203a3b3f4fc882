package events

import (
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// TestLineRoundTrip: what the edge encodes, the plugin parses back.
func TestLineRoundTrip(t *testing.T) {
	for _, ev := range []Event{
		{ID: "0b6f7c8e-5d3a-4e7b-9a51-2f0c1d9e8a7b", CapsuleID: "cap1", RunID: "r1", Type: "run.start", TsMs: 1767225600123, ReceivedMs: 1767225600200, Payload: `{"a":[1,"\t"]}`},
		{ID: "e-1", Type: "é 日本", TsMs: 0, ReceivedMs: MaxTSMillis},
		{ID: strings.Repeat("i", 128), RunID: strings.Repeat("r", 128), Type: strings.Repeat("t", MaxTypeBytes)},
	} {
		line := string(ev.AppendLine(nil))
		if strings.Count(line, "\t") != NumFields-1 || !strings.HasSuffix(line, "\n") {
			t.Fatalf("line %q", line)
		}
		got, le := ParseLine(strings.TrimSuffix(line, "\n"))
		if le != nil || got != ev {
			t.Fatalf("%q: %+v %v, want %+v", line, got, le, ev)
		}
	}
}

func TestParseLineRefuses(t *testing.T) {
	ok := []string{"e", "c", "r", "t", "1", "2", "{}"}
	with := func(i int, v string) string {
		f := append([]string(nil), ok...)
		f[i] = v
		return strings.Join(f, "\t")
	}
	for _, c := range []struct{ line, code string }{
		{"e\tc\tr\tt\t1\t2", "bad_line"},
		{with(6, "{}\tx"), "bad_line"},
		{with(0, ""), "bad_id"},
		{with(0, strings.Repeat("i", 129)), "bad_id"},
		{with(1, strings.Repeat("c", 129)), "bad_capsule_id"},
		{with(1, "a b"), "bad_capsule_id"},
		{with(1, "../.."), "bad_capsule_id"},
		{with(2, "r😀"), "bad_run_id"},
		{with(2, "r\u202e1"), "bad_run_id"},
		{with(3, ""), "bad_type"},
		{with(3, strings.Repeat("t", MaxTypeBytes+1)), "bad_type"},
		{with(3, "a\x01b"), "bad_type"},
		{with(3, "bad\xff"), "bad_type"},
		{with(4, "soon"), "bad_ts"},
		{with(4, "-1"), "bad_ts"},
		{with(4, "253402300800000"), "bad_ts"},
		{with(5, "-2"), "bad_received_at"},
		{with(6, strings.Repeat("p", MaxLineBytes)), "event_too_large"},
	} {
		if _, le := ParseLine(c.line); le == nil || le.Code != c.code {
			t.Errorf("%.80q: %v, want %s", c.line, le, c.code)
		}
	}
	if _, le := ParseLine(strings.Join(ok, "\t")); le != nil {
		t.Fatal(le)
	}
}

func TestInsertSQL(t *testing.T) {
	if RowsPerInsert*NumFields > abi.MaxSQLArgs {
		t.Fatalf("%d rows of %d parameters exceed %d", RowsPerInsert, NumFields, abi.MaxSQLArgs)
	}
	if got := InsertSQL(2); got != "INSERT INTO runtime_events (id, capsule_id, run_id, type, ts, received_at, payload) VALUES (?,?,?,?,?,?,?),(?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING" {
		t.Fatal(got)
	}
	ev := Event{ID: "e", Type: "t", TsMs: 1, ReceivedMs: 2}
	args := ev.AppendArgs(nil)
	if len(args) != NumFields || args[1] != nil || args[2] != nil || args[6] != nil || args[4] != int64(1) {
		t.Fatalf("%v", args)
	}
}

func TestRoutingKey(t *testing.T) {
	for _, c := range []struct {
		ev   Event
		want string
	}{
		{Event{ID: "e", CapsuleID: "c", RunID: "r"}, "c"},
		{Event{ID: "e", RunID: "r"}, "r"},
		{Event{ID: "e"}, "e"},
	} {
		if got := c.ev.RoutingKey(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.ev, got, c.want)
		}
	}
}

// BenchmarkParseLine is one event line (no allocation).
func BenchmarkParseLine(b *testing.B) {
	line := "0b6f7c8e-5d3a-4e7b-9a51-2f0c1d9e8a7b\tcap-1\trun-9\trun.finished\t1767225600001\t1767225600501\t{\"i\":1}"
	b.ReportAllocs()
	for b.Loop() {
		if _, le := ParseLine(line); le != nil {
			b.Fatal(le)
		}
	}
}
