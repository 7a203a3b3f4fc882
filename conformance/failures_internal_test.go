package conformance

import (
	"context"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/internal/testutil"
)

// stepCase is one step run in a shared world, and what its failure must
// say (nothing: the step must pass).
type stepCase struct {
	step string
	want []string
}

// runSteps runs the steps one after another in one world of the plugin
// built from pkg (a failed step leaves the world usable), checking each
// step's failure text.
func runSteps(t *testing.T, pkg string, b Binding, cases []stepCase) {
	t.Helper()
	wasm := testutil.Plugin(t, pkg)
	s := &Suite{Format: Format, Binding: b, Scenarios: []Scenario{{Name: "s", Steps: []Step{{Advance: new(Duration)}}}}}
	r, err := newRunner(wasm, s, Options{CacheDir: testutil.CacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWorld(context.Background(), r, &s.Scenarios[0], t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	for i, c := range cases {
		st, err := decodeStep([]byte(c.step), "steps[0]")
		if err == nil {
			err = st.validate(b, "steps[0]")
		}
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		f := w.step(context.Background(), &st, "steps[0]")
		switch {
		case f == nil && len(c.want) > 0:
			t.Errorf("case %d %s passed, want a failure", i, c.step)
		case f != nil && len(c.want) == 0:
			t.Errorf("case %d %s failed: %v", i, c.step, f)
		case f != nil:
			msg := f.Error()
			for _, want := range c.want {
				if !strings.Contains(msg, want) {
					t.Errorf("case %d %s: missing %q in:\n%s", i, c.step, want, msg)
				}
			}
		}
	}
}

func TestFailureMessages(t *testing.T) {
	t.Parallel()
	runSteps(t, "examples/counter", Binding{Name: "COUNTER"}, []stepCase{
		{step: `{"fetch": {"key": "a", "method": "POST", "path": "/increment"}}`},
		{
			step: `{"expect_storage": {"key": "a", "entries": {"count": "7", "other": "x"}}}`,
			want: []string{
				`steps[0] expect_storage key="a": key "count": want "7", got "1"; key "other": want "x", absent`,
				"storage of shard COUNTER/a (- expected, + actual):",
				`- count = "7"`, `+ count = "1"`, `- other = "x"`,
			},
		},
		{
			step: `{"expect_storage": {"key": "a", "prefix": "c", "count": 0}}`,
			want: []string{`count of keys with prefix "c": want 0, got 1`, `  count = "1"`},
		},
		{
			step: `{"expect_storage": {"key": "a", "keys": ["count", "more"]}}`,
			want: []string{`keys with prefix "": want ["count","more"], got ["count"]`, "- more"},
		},
		{
			step: `{"fetch": {"key": "a", "path": "/"}, "expect": {"error": "shard_crashed"}}`,
			want: []string{"error: want host error shard_crashed, but the plugin answered status 200", "expected: host error shard_crashed"},
		},
		{
			step: `{"fetch": {"key": "a", "method": "POST", "path": "/panic"}}`,
			want: []string{"the fetch failed in the host (shard_crashed)", "got:      host error shard_crashed (status 500): plugin trapped"},
		},
		{
			step: `{"fetch": {"key": "a", "method": "POST", "path": "/panic"}, "expect": {"error": "shard_timeout"}}`,
			want: []string{"error: want shard_timeout, got shard_crashed"},
		},
		{
			step: `{"repeat": 3, "step": {"fetch": {"key": "a", "path": "/nope"}, "expect": {"status": 200, "headers": {"content-type": "text/plain"}}}}`,
			want: []string{
				`steps[0] (repetition 1 of 3) fetch GET /nope key="a": status: want 200, got 404; header content-type: want "text/plain", got "application/json"`,
			},
		},
		{
			step: `{"fetch": {"key": "a", "path": "/"}, "expect": {"body": "{}", "body_contains": "nothing"}}`,
			want: []string{`body: want "{}", got "{\"count\":1`, `body does not contain "nothing"`},
		},
		{
			step: `{"expect_alarm": {"key": "a", "in": "5s"}}`,
			want: []string{"no alarm is set", "expected: alarm at 2026-01-01T00:00:05Z (start+5s), in 5s", "got:      no alarm"},
		},
		{step: `{"fire_alarm": {"key": "a"}}`, want: []string{"shard a has no alarm to fire"}},
		{step: `{"fetch": {"key": "a", "method": "POST", "path": "/reset-after?ms=2000"}}`},
		{
			step: `{"expect_alarm": {"key": "a", "at": "2026-01-01T00:00:03Z"}}`,
			want: []string{"alarm is off by -1s", "got:      alarm at 2026-01-01T00:00:02Z (start+2s), in 2s"},
		},
		{step: `{"expect_alarm": {"key": "a", "none": true}}`, want: []string{"an alarm is set", "expected: no alarm"}},
		{step: `{"advance": "2s"}`},
		{
			step: `{"expect_log": {"message": "counter reset by alarm", "fields": {"shard": "b"}}}`,
			want: []string{"no matching log record", "records with that code or message but other fields:", `"shard":"a"`},
		},
		{step: `{"expect_log": {"code": "E-VIBECODR-2140"}}`, want: []string{"no matching log record", "codes logged: []"}},
		{
			step: `{"expect_no_log": {"message": "counter reset by alarm"}}`,
			want: []string{"1 matching log records", `expected: no record with message contains "counter reset by alarm"`},
		},
		{step: `{"expect_analytics": {"count": 2}}`, want: []string{"data points in all datasets: want 2, got 0"}},
		{step: `{"fetch": {"key": "", "path": "/"}}`, want: []string{"bad shard key: empty object name"}},
	})
}

func TestLedgerFailureMessages(t *testing.T) {
	t.Parallel()
	runSteps(t, "conformance/testdata/ledger", Binding{Name: "LEDGER", SQL: true, Analytics: true}, []stepCase{
		{step: `{"fetch": {"key": "a", "method": "POST", "path": "/add?n=7"}}`},
		{step: `{"advance": "1s"}`},
		{
			step: `{"expect_sql": {"query": "SELECT seq, total FROM ledger_flushes", "rows": [[1, 8]]}}`,
			want: []string{
				`steps[0] expect_sql SELECT seq, total FROM ledger_flushes: row 0 column 1: want 8, got 7`,
				`expected: rows [[1,8]]`, `got:      rows [[1,7]]`, "columns: seq, total",
			},
		},
		{step: `{"expect_sql": {"query": "SELECT shard, 1.5, NULL FROM ledger_flushes", "rows": [["LEDGER/a", 1.5, null]]}}`},
		{step: `{"expect_sql": {"query": "SELECT 1 WHERE 0", "rows": [[1]]}}`, want: []string{"want 1 rows, got 0"}},
		{step: `{"expect_sql": {"query": "SELECT 1, 2", "rows": [[1]]}}`, want: []string{"row 0: want 1 columns, got 2"}},
		{step: `{"expect_sql": {"query": "SELECT '1'", "rows": [[1]]}}`, want: []string{`row 0 column 0: want 1, got "1"`}},
		{step: `{"expect_sql": {"query": "SELECT nope FROM nowhere", "rows": []}}`, want: []string{"query failed: "}},
		{
			step: `{"expect_analytics": {"count": 1, "dataset": "other"}}`,
			want: []string{`data points in dataset "other": want 1, got 0`, `(datasets written: ["LEDGER"])`},
		},
		{step: `{"expect_log": {"code": "E-LEDGER-1", "count": 2}}`, want: []string{"want 2 matching log records, got 1", "expected: 2 records with code=E-LEDGER-1"}},
		{step: `{"expect_log": {"code": "E-LEDGER-1", "fields": {"count": "8"}}}`, want: []string{"records with that code or message but other fields:", `"count":"7"`}},
		{step: `{"sql_fail": {"mode": "error"}}`},
		{step: `{"fetch": {"key": "a", "method": "POST", "path": "/add?n=1"}}`},
		{step: `{"advance": "1s"}`},
		{step: `{"expect_log": {"code": "E-LEDGER-2", "fields": {"error": "?"}}}`, want: []string{`sql_fail mode \"error\": conformance: injected SQL failure`}},
	})
}
