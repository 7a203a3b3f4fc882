package conformance_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/edgeshard/edgeshard/edge/schema"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

var backends = []string{conformance.BackendMemory, conformance.BackendBadger}

func repoPath(rel string) string { return filepath.Join(testutil.RepoRoot(), rel) }

func counterSuite() string { return repoPath("examples/counter/conformance.json") }

// opts runs scenarios in parallel: each world loads the plugin afresh,
// which takes seconds under -race.
// The plugins' suites need the edge API's tables.
func opts(backend string) conformance.Options {
	ms, err := schema.Migrations()
	if err != nil {
		panic(err)
	}
	return conformance.Options{CacheDir: testutil.CacheDir(), Backend: backend, Parallel: true, Schema: ms}
}

// TestCounterSuite runs the example counter's suite on both backends:
// through RunSuite on memory (checking the report), through Run on badger.
func TestCounterSuite(t *testing.T) {
	t.Parallel()
	wasm := testutil.Plugin(t, "examples/counter")
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		s, err := conformance.LoadSuite(counterSuite())
		if err != nil {
			t.Fatal(err)
		}
		rep := conformance.RunSuite(context.Background(), wasm, s, opts(conformance.BackendMemory))
		if rep.Failed != 0 || rep.Passed != len(s.Scenarios) || rep.Err != nil {
			t.Fatalf("report: %d passed, %d failed, err %v, want all %d passed:\n%s", rep.Passed, rep.Failed, rep.Err, len(s.Scenarios), rep)
		}
		out := rep.String()
		if !strings.HasPrefix(out, "PASS a fresh counter reads 0 (") || !strings.HasSuffix(out, "\n8 passed, 0 failed\n") {
			t.Fatalf("report text:\n%s", out)
		}
	})
	t.Run("badger", func(t *testing.T) {
		t.Parallel()
		conformance.Run(t, wasm, counterSuite(), opts(conformance.BackendBadger))
	})
}

// TestLedgerSuite covers the SQL, analytics, log, vars and alarm-retry
// steps with a test plugin that uses every binding. (The pipeline plugins'
// suites run those steps on both backends.)
func TestLedgerSuite(t *testing.T) {
	t.Parallel()
	wasm := testutil.Plugin(t, "conformance/testdata/ledger")
	conformance.Run(t, wasm, "testdata/ledger.json", opts(conformance.BackendMemory))
}

// TestShardSQLSuite runs the database-per-shard steps (shard_sql: expect_sql
// by key, sql_fail crash_after_commit between the two commits) with the
// host's shardsql test plugin, on both backends.
func TestShardSQLSuite(t *testing.T) {
	t.Parallel()
	wasm := testutil.Plugin(t, "host/testdata/plugins/shardsql")
	conformance.RunEachBackend(t, wasm, "testdata/shardsql.json", opts(""))
}

// TestPluginSuites runs each pipeline plugin's own suite on the real host
// (Badger + SQLite file); each plugin's package runs it on the memory
// backend, so together they cover both without running either twice.
func TestPluginSuites(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"ratelimit", "runtimeevents", "counters"} {
		t.Run(name, func(t *testing.T) {
			dir := repoPath(filepath.Join("plugins", name))
			if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
				t.Skipf("plugins/%s does not exist yet", name)
			}
			for _, f := range []string{"main.go", "conformance.json"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Fatalf("plugins/%s exists but %s is missing: %v", name, f, err)
				}
			}
			wasm := testutil.Plugin(t, "plugins/"+name)
			t.Run(conformance.BackendBadger, func(t *testing.T) {
				t.Parallel()
				conformance.Run(t, wasm, filepath.Join(dir, "conformance.json"), opts(conformance.BackendBadger))
			})
		})
	}
}

// TestPostgresSuites runs the pipeline plugins' suites and the ledger's
// with their SQL on PostgreSQL (Options.SQLURL; a schema per scenario in
// one fresh database), the same module and scenarios as on SQLite.
func TestPostgresSuites(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	for _, name := range []string{"ratelimit", "runtimeevents", "counters", "ledger"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pkg, suite := "plugins/"+name, repoPath(filepath.Join("plugins", name, "conformance.json"))
			if name == "ledger" {
				pkg, suite = "conformance/testdata/ledger", "testdata/ledger.json"
			}
			o := opts(conformance.BackendMemory)
			o.SQLURL = url
			conformance.Run(t, testutil.Plugin(t, pkg), suite, o)
		})
	}
}

func TestRunSuiteFilterAndTrace(t *testing.T) {
	t.Parallel()
	wasm := testutil.Plugin(t, "examples/counter")
	s, err := conformance.LoadSuite(counterSuite())
	if err != nil {
		t.Fatal(err)
	}
	o := opts("")
	o.Filter = "panic"
	o.Parallel = false
	var trace []string
	o.Logf = func(f string, a ...any) { trace = append(trace, fmt.Sprintf(f, a...)) }
	rep := conformance.RunSuite(context.Background(), wasm, s, o)
	if rep.Passed != 1 || rep.Failed != 0 || len(rep.Results) != 1 {
		t.Fatalf("filtered report:\n%s", rep)
	}
	wantContains(t, strings.Join(trace, "\n"),
		`steps[1] fetch POST /panic key="p"`,
		"→ host error shard_crashed (status 500): plugin trapped",
		`steps[0] fetch POST /increment key="p"`)
}

// runInline runs a suite given as JSON against the counter plugin.
func runInline(t *testing.T, wasm, suite string) conformance.Report {
	t.Helper()
	s, err := conformance.ParseSuite([]byte(suite))
	if err != nil {
		t.Fatalf("ParseSuite: %v", err)
	}
	return conformance.RunSuite(context.Background(), wasm, s, opts(""))
}

func wantContains(t *testing.T, text string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(text, s) {
			t.Errorf("missing %q in:\n%s", s, text)
		}
	}
}

func TestWrongExpectationFails(t *testing.T) {
	t.Parallel()
	wasm := testutil.Plugin(t, "examples/counter")
	rep := runInline(t, wasm, `{
		"format": "edgeshard-conformance/v1",
		"binding": {"name": "COUNTER"},
		"scenarios": [
			{"name": "right", "steps": [
				{"fetch": {"key": "a", "method": "POST", "path": "/increment"}, "expect": {"json": {"count": 1}}}
			]},
			{"name": "wrong count", "steps": [
				{"fetch": {"key": "a", "method": "POST", "path": "/increment"}},
				{"fetch": {"key": "a", "path": "/"}, "expect": {"json": {"count": 2}}},
				{"fetch": {"key": "a", "path": "/"}, "expect": {"json": {"count": 1}}}
			]},
			{"name": "unexpected crash", "steps": [
				{"fetch": {"key": "a", "method": "POST", "path": "/panic"}}
			]}
		]}`)
	if rep.Failed != 2 || rep.Passed != 1 {
		t.Fatalf("want 1 passed, 2 failed:\n%s", rep)
	}
	res := rep.Results[1]
	if res.Passed || res.Name != "wrong count" || res.Failure == nil {
		t.Fatalf("result: %+v", res)
	}
	f := res.Failure
	if f.Step != 1 || f.Kind != "fetch" {
		t.Fatalf("failure at step %d kind %q, want step 1 fetch", f.Step, f.Kind)
	}
	wantContains(t, rep.String(),
		"PASS right (",
		"FAIL wrong count (",
		`steps[1] fetch GET / key="a": json $.count: want 2, got 1`,
		`expected: status 2xx, json {"count":2}`,
		`got:      status 200, body {"count":1,"version":"dev"}`,
		"FAIL unexpected crash (",
		`steps[0] fetch POST /panic key="a": the fetch failed in the host (shard_crashed)`,
		"host warnings and errors (last ",
		"panic requested by /panic",
		"\n1 passed, 2 failed\n",
	)
	if len(res.Logs) == 0 {
		t.Error("a failed scenario keeps the host log")
	}
}

// TestBrokenPluginFailsSuite runs the counter suite against a mutant of
// examples/counter whose alarm logs "counter reset by alarm" but leaves
// the count as it is.
func TestBrokenPluginFailsSuite(t *testing.T) {
	t.Parallel()
	wasm := testutil.Mutant(t, "examples/counter", "main.go",
		`return sdk.Storage().Put("count", []byte("0"))`, "return nil", "-X main.version=broken")
	s, err := conformance.LoadSuite(counterSuite())
	if err != nil {
		t.Fatal(err)
	}
	rep := conformance.RunSuite(context.Background(), wasm, s, opts(""))
	failed := map[string]*conformance.Failure{}
	for _, r := range rep.Results {
		if !r.Passed {
			failed[r.Name] = r.Failure
		}
	}
	for _, name := range []string{
		"reset-after alarm resets the count (fire_alarm)",
		"reset-after alarm resets the count (advance)",
		"a later reset-after replaces the alarm",
		"restart keeps the count and the alarm",
	} {
		if failed[name] == nil {
			t.Errorf("scenario %q passed against the broken counter", name)
		}
	}
	if rep.Failed != len(failed) || rep.Failed != 4 || rep.Passed != 4 {
		t.Errorf("report: %d passed, %d failed, want 4 and 4", rep.Passed, rep.Failed)
	}
	f := failed["reset-after alarm resets the count (fire_alarm)"]
	if f != nil && (f.Step != 7 || !strings.Contains(f.Message, "$.count: want 0, got 3")) {
		t.Errorf("failure: %v", f)
	}
	if !strings.HasSuffix(rep.String(), "\n4 passed, 4 failed\n") {
		t.Errorf("report text:\n%s", rep)
	}
}

func TestParseSuiteErrors(t *testing.T) {
	const head = `"format": "edgeshard-conformance/v1", "binding": {"name": "X"}`
	scen := func(steps string) string {
		return `{` + head + `, "scenarios": [{"name": "s1", "steps": [` + steps + `]}]}`
	}
	cases := []struct {
		name, suite string
		want        string
	}{
		{"other format", `{"format": "edgeshard-conformance/v2", "scenarios": []}`,
			`format "edgeshard-conformance/v2" is not supported: want "edgeshard-conformance/v1"`},
		{"missing format", `{"scenarios": []}`, `missing "format"`},
		{"syntax", "{\n" + head + ",\n \"scenarios\": [}", "JSON syntax error at line 3, column 16"},
		{"unknown suite key", `{` + head + `, "scenario": []}`, `suite: unknown key "scenario"`},
		{"unknown binding key", `{"format": "edgeshard-conformance/v1", "binding": {"shard": 3}, "scenarios": []}`,
			`binding: unknown key "shard"`},
		{"unknown scenario key", `{` + head + `, "scenarios": [{"name": "s1", "step": []}]}`,
			`scenarios[0]: unknown key "step"`},
		{"unknown step key", scen(`{"advance": "1s"}, {"fecth": {"key": "a"}}`),
			`scenario "s1": steps[1]: unknown step key "fecth" (did you mean "fetch"?)`},
		{"unknown step key far", scen(`{"zzzzzzzz": 1}`), `steps[0]: unknown step key "zzzzzzzz" (known keys: comment, fetch,`},
		{"unknown fetch key", scen(`{"fetch": {"key": "a", "mehtod": "GET"}}`),
			`scenario "s1": steps[0].fetch: unknown key "mehtod"`},
		{"unknown expect key", scen(`{"fetch": {"key": "a"}, "expect": {"staus": 200}}`),
			`steps[0].expect: unknown key "staus"`},
		{"unknown key in repeated step", scen(`{"repeat": 2, "step": {"fetch": {"key": "a"}, "expct": {}}}`),
			`steps[0].step: unknown step key "expct" (did you mean "expect"?)`},
		{"wrong type", scen(`{"repeat": "2", "step": {"advance": "1s"}}`), `steps[0].repeat: value: want an integer, got JSON string`},
		{"bad duration", scen(`{"advance": "5 seconds"}`), `steps[0].advance: duration "5 seconds": want a Go duration`},
		{"sub-millisecond advance", scen(`{"advance": "1.5ms"}`), `steps[0] (advance): advance 1.5ms: alarms have millisecond resolution`},
		{"bad status", scen(`{"fetch": {"key": "a"}, "expect": {"status": "6xx"}}`), `status "6xx": want 100..599`},
		{"no action", scen(`{"comment": "nothing"}`), `steps[0]: no action: a step needs one of fetch, repeat, advance, fire_alarm,`},
		{"two actions", scen(`{"advance": "1s", "restart": {"key": "a"}}`), `several actions (advance, restart)`},
		{"expect without fetch", scen(`{"restart": {"key": "a"}, "expect": {"status": 200}}`), `"expect" belongs to a "fetch" step`},
		{"repeat without step", scen(`{"repeat": 2}`), `repeat needs a "step"`},
		{"invalid repeated step", scen(`{"repeat": 2, "step": {"advance": "-1s"}}`), `steps[0].step (advance): cannot advance by a negative duration`},
		{"sql without binding", scen(`{"sql_fail": {"mode": "error"}}`), `sql_fail needs "sql" or "shard_sql": true in the binding`},
		{"sql and shard_sql", `{"format": "edgeshard-conformance/v1", "binding": {"sql": true, "shard_sql": true}, "scenarios": [{"name": "s", "steps": [{"advance": "1s"}]}]}`,
			`a binding has one shared database or one per shard`},
		{"shard_sql error mode", `{"format": "edgeshard-conformance/v1", "binding": {"shard_sql": true}, "scenarios": [{"name": "s", "steps": [{"sql_fail": {"mode": "error"}}]}]}`,
			`mode "error" does not apply to shard_sql`},
		{"shard_sql expect_sql without key", `{"format": "edgeshard-conformance/v1", "binding": {"shard_sql": true}, "scenarios": [{"name": "s", "steps": [{"expect_sql": {"query": "SELECT 1", "rows": []}}]}]}`,
			`expect_sql needs the key of the shard`},
		{"expect_sql key without shard_sql", `{"format": "edgeshard-conformance/v1", "binding": {"sql": true}, "scenarios": [{"name": "s", "steps": [{"expect_sql": {"key": "a", "query": "SELECT 1", "rows": []}}]}]}`,
			`key applies to shard_sql only`},
		{"sql mode", `{"format": "edgeshard-conformance/v1", "binding": {"sql": true}, "scenarios": [{"name": "s", "steps": [{"sql_fail": {"mode": "sometimes"}}]}]}`,
			`mode "sometimes": want "error", "crash_after_commit" or "off"`},
		{"rows required", `{"format": "edgeshard-conformance/v1", "binding": {"sql": true}, "scenarios": [{"name": "s", "steps": [{"expect_sql": {"query": "SELECT 1"}}]}]}`,
			`rows is required`},
		{"alarm exactly one", scen(`{"expect_alarm": {"key": "a", "none": true, "in": "1s"}}`), `exactly one of in, at and none`},
		{"alarm at", scen(`{"expect_alarm": {"key": "a", "at": "tomorrow"}}`), `at "tomorrow": want an RFC 3339 time`},
		{"empty log", scen(`{"expect_log": {}}`), `needs at least one of code, message, level and fields`},
		{"no_log count", scen(`{"expect_no_log": {"code": "X", "count": 1}}`), `count belongs to expect_log`},
		{"body and json", scen(`{"fetch": {"key": "a", "body": "x", "json": {}}}`), `both body and json`},
		{"analytics count", scen(`{"expect_analytics": {}}`), `expect_analytics needs a count`},
		{"storage", scen(`{"expect_storage": {"key": "a"}}`), `expect_storage needs count, keys or entries`},
		{"duplicate scenario", `{` + head + `, "scenarios": [{"name": "s", "steps": [{"advance": "1s"}]}, {"name": "s", "steps": [{"advance": "1s"}]}]}`,
			`scenario "s": two scenarios have this name`},
		{"no scenarios", `{` + head + `, "scenarios": []}`, `the suite has no scenarios`},
		{"not an object", `[]`, `value: want an object, got JSON array`},
		{"wrong field type", scen(`{"fetch": {"key": 3}}`), `steps[0].fetch: key: want a string, got JSON number`},
		{"trailing data", `{` + head + `, "scenarios": []} {}`, `after top-level value`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := conformance.ParseSuite([]byte(c.suite))
			if err == nil {
				t.Fatalf("ParseSuite accepted it, want an error containing %q", c.want)
			}
			if !errors.Is(err, conformance.ErrInvalidSuite) {
				t.Errorf("error %v does not match ErrInvalidSuite", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error:\n  %v\nwant it to contain:\n  %s", err, c.want)
			}
		})
	}
}

func TestParseSuiteRoundTrip(t *testing.T) {
	for _, p := range []string{counterSuite(), "testdata/ledger.json"} {
		s, err := conformance.LoadSuite(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := conformance.ParseSuite(b)
		if err != nil {
			t.Fatalf("%s: re-parse of the marshalled suite: %v\n%s", p, err, b)
		}
		b2, _ := json.Marshal(s2)
		if string(b) != string(b2) {
			t.Fatalf("%s: round trip changed the suite:\n%s\n%s", p, b, b2)
		}
	}
}

func TestRunSuiteSetupErrors(t *testing.T) {
	s, err := conformance.LoadSuite(counterSuite())
	if err != nil {
		t.Fatal(err)
	}
	rep := conformance.RunSuite(context.Background(), "testdata/missing.wasm", s, conformance.Options{Filter: "fresh"})
	if rep.Err == nil || rep.Failed != 1 || rep.Passed != 0 {
		t.Fatalf("missing plugin: %+v", rep)
	}
	wantContains(t, rep.String(), "FAIL a fresh counter reads 0", "setup: read plugin: open testdata/missing.wasm", "0 passed, 1 failed")

	rep = conformance.RunSuite(context.Background(), "testdata/missing.wasm", s, conformance.Options{Backend: "etcd"})
	if rep.Failed != len(s.Scenarios) || !strings.Contains(rep.Err.Error(), `unknown backend "etcd"`) {
		t.Fatalf("bad backend: %+v", rep)
	}

	rep = conformance.RunSuite(context.Background(), "x.wasm", nil, conformance.Options{})
	if rep.Failed != 1 || !errors.Is(rep.Err, conformance.ErrInvalidSuite) {
		t.Fatalf("nil suite: %+v", rep)
	}

	// A cancelled run stops before the next scenario.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep = conformance.RunSuite(ctx, counterSuite(), s, conformance.Options{})
	if !errors.Is(rep.Err, context.Canceled) || len(rep.Results) != 0 {
		t.Fatalf("cancelled run: %+v", rep)
	}
	wantContains(t, rep.String(), `error: run stopped before scenario "a fresh counter reads 0": context canceled`)

	// A module that is not wasm fails each scenario at setup.
	bad := filepath.Join(t.TempDir(), "bad.wasm")
	os.WriteFile(bad, []byte("not wasm"), 0o644)
	rep = conformance.RunSuite(context.Background(), bad, s, conformance.Options{CacheDir: t.TempDir(), Filter: "fresh"})
	if rep.Failed != 1 || rep.Err != nil {
		t.Fatalf("invalid module: %+v", rep)
	}
	wantContains(t, rep.String(), "setup: start host: binding \"COUNTER\"")
}

func FuzzParseSuite(f *testing.F) {
	for _, p := range []string{counterSuite(), "testdata/ledger.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"format": "edgeshard-conformance/v1", "scenarios": [{"name": "s", "steps": [{"repeat": 1, "step": {"repeat": 1, "step": {"advance": "1s"}}}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := conformance.ParseSuite(b)
		if err != nil {
			return
		}
		// What parses re-parses from its own encoding.
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if _, err := conformance.ParseSuite(enc); err != nil {
			t.Fatalf("re-parse: %v\n%s", err, enc)
		}
	})
}
