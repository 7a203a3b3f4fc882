package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/httpx"
)

// Options tune a run. The zero value runs every scenario on the memory
// backend.
type Options struct {
	// CacheDir is wazero's compilation cache, shared by the scenarios (a Go
	// guest takes seconds to compile). Empty means the edgeshard CLI's
	// cache, os.UserCacheDir()/edgeshard/wazero, or a temporary directory
	// for this run when there is no user cache directory.
	CacheDir string
	// Backend is "memory" (default) or "badger" (the real host's storage:
	// Badger and a SQLite file, in a temporary directory per scenario).
	Backend string
	// Logf, if set, receives a trace of every step.
	Logf func(format string, args ...any)
	// Filter runs only the scenarios whose name contains it.
	Filter string
	// Parallel runs scenarios concurrently, each still in its own world:
	// RunSuite up to GOMAXPROCS at a time (results stay in suite order,
	// trace lines carry the scenario's name), Run as parallel subtests.
	// Logf must then be safe for concurrent use.
	Parallel bool
	// Schema is applied to a scenario's SQL database before it starts (the
	// edge API's plugins need edge/schema's tables); none when empty. The
	// migrations of the database's dialect are applied (sqldb.ForDialect).
	Schema []sqldb.Migration
	// SQLURL, when set, is a PostgreSQL database (postgres://…) that holds
	// the scenarios' SQL instead of SQLite: each scenario gets a schema of
	// its own in it (its connections' search_path), dropped afterwards, so
	// scenarios stay apart and may run in parallel.
	SQLURL string
}

// stepTimeout bounds one step (a repeat bounds each repetition).
const stepTimeout = time.Minute

// errStepTimeout is the cause of a step's context ending at stepTimeout.
var errStepTimeout = fmt.Errorf("the step took longer than %v", stepTimeout)

// runner runs the scenarios of one suite against one plugin.
type runner struct {
	suite    *Suite
	bin      []byte
	opts     Options
	cacheDir string
	cleanup  func()
}

func newRunner(wasmPath string, s *Suite, opts Options) (*runner, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: nil suite", ErrInvalidSuite)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	switch opts.Backend {
	case "", BackendMemory, BackendBadger:
	default:
		return nil, fmt.Errorf("unknown backend %q: want %q or %q", opts.Backend, BackendMemory, BackendBadger)
	}
	if opts.SQLURL != "" && !sqldb.IsPostgresURL(opts.SQLURL) {
		return nil, fmt.Errorf("SQL URL %q: want a PostgreSQL database, postgres://…", sqldb.Redact(opts.SQLURL))
	}
	bin, err := os.ReadFile(wasmPath)
	if err != nil {
		return nil, fmt.Errorf("read plugin: %w", err)
	}
	r := &runner{suite: s, bin: bin, opts: opts, cacheDir: opts.CacheDir, cleanup: func() {}}
	if r.cacheDir == "" {
		if d, err := os.UserCacheDir(); err == nil {
			r.cacheDir = filepath.Join(d, "edgeshard", "wazero")
		} else {
			d, err := os.MkdirTemp("", "edgeshard-conformance-cache-*")
			if err != nil {
				return nil, fmt.Errorf("compilation cache: %w", err)
			}
			r.cacheDir = d
			r.cleanup = func() { os.RemoveAll(d) }
		}
	}
	return r, nil
}

// selected reports whether the filter selects the scenario.
func (r *runner) selected(sc *Scenario) bool {
	return r.opts.Filter == "" || strings.Contains(sc.Name, r.opts.Filter)
}

// RunSuite runs every scenario of s (those Filter selects) against the
// plugin at wasmPath, each in a fresh world, and reports the outcome. A
// problem that keeps every scenario from running (an invalid suite or
// backend, an unreadable plugin) is in Report.Err and fails each scenario;
// when ctx ends, the run stops after the current scenario and Report.Err
// says so.
func RunSuite(ctx context.Context, wasmPath string, s *Suite, opts Options) Report {
	var rep Report
	if s != nil {
		rep.Suite = s.Name
	}
	r, err := newRunner(wasmPath, s, opts)
	if err != nil {
		rep.Err = err
		n := 0
		if s != nil {
			for i := range s.Scenarios {
				sc := &s.Scenarios[i]
				if opts.Filter == "" || strings.Contains(sc.Name, opts.Filter) {
					rep.add(setupFailure(sc.Name, err))
					n++
				}
			}
		}
		if n == 0 {
			rep.add(setupFailure("(suite)", err))
		}
		return rep
	}
	defer r.cleanup()
	var todo []*Scenario
	for i := range s.Scenarios {
		if sc := &s.Scenarios[i]; r.selected(sc) {
			todo = append(todo, sc)
		}
	}
	results := make([]*ScenarioResult, len(todo))
	workers := 1
	if opts.Parallel {
		workers = runtime.GOMAXPROCS(0)
	}
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i, sc := range todo {
		sem <- struct{}{}
		if err := ctx.Err(); err != nil {
			rep.Err = fmt.Errorf("run stopped before scenario %q: %w", sc.Name, err)
			break
		}
		logf := opts.Logf
		if opts.Parallel && logf != nil {
			logf = func(format string, a ...any) { opts.Logf("[%s] "+format, append([]any{sc.Name}, a...)...) }
		}
		wg.Go(func() {
			defer func() { <-sem }()
			res := r.run(ctx, sc, logf)
			results[i] = &res
		})
	}
	wg.Wait()
	for _, res := range results {
		if res != nil {
			rep.add(*res)
		}
	}
	return rep
}

func setupFailure(name string, err error) ScenarioResult {
	return ScenarioResult{Name: name, Failure: &Failure{Step: -1, Kind: "setup", Message: err.Error()}}
}

// run runs one scenario in a fresh world.
func (r *runner) run(ctx context.Context, sc *Scenario, logf func(string, ...any)) ScenarioResult {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	t0 := time.Now()
	res := ScenarioResult{Name: sc.Name}
	w, err := newWorld(ctx, r, sc, logf)
	if err != nil {
		res.Failure = &Failure{Step: -1, Kind: "setup", Message: err.Error()}
		res.Duration = time.Since(t0)
		return res
	}
	for i := range sc.Steps {
		st := &sc.Steps[i]
		f := w.step(ctx, st, fmt.Sprintf("steps[%d]", i))
		if f != nil {
			f.Step = i
			res.Failure = f
			break
		}
	}
	if res.Failure != nil {
		recs := w.logs.records()
		if p := problems(recs, 5); len(p) > 0 {
			res.Failure.Detail = joinDetail(res.Failure.Detail,
				"host warnings and errors (last "+strconv.Itoa(len(p))+"):\n  "+strings.Join(p, "\n  "))
		}
		res.Logs = w.logs.Lines()
	}
	if err := w.close(); err != nil && res.Failure == nil {
		res.Failure = &Failure{Step: len(sc.Steps), Kind: "teardown", Message: err.Error()}
	}
	res.Passed = res.Failure == nil
	res.Duration = time.Since(t0)
	return res
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "\n" + b
}

// step runs one step; path ("steps[3]") names it in the trace.
func (w *world) step(ctx context.Context, st *Step, path string) *Failure {
	if st.Kind() == "repeat" {
		for i := 1; i <= st.Repeat; i++ {
			if f := w.step(ctx, st.Step, fmt.Sprintf("%s#%d", path, i)); f != nil {
				if f.Iteration == 0 {
					f.Iteration, f.Repeat = i, st.Repeat
				}
				return f
			}
		}
		return nil
	}
	ctx, cancel := context.WithTimeoutCause(ctx, stepTimeout, errStepTimeout)
	defer cancel()
	action := describe(st)
	w.logf("%s %s", path, action)
	f := w.do(ctx, st)
	if f != nil {
		f.Kind, f.Action = st.Kind(), action
	}
	return f
}

// describe names a (non-repeat) step for messages, e.g.
// `fetch POST /increment key="a"`.
func describe(st *Step) string {
	switch st.Kind() {
	case "fetch":
		f := st.Fetch
		return fmt.Sprintf("fetch %s %s key=%q", fetchMethod(f), fetchPath(f), f.Key)
	case "advance":
		return "advance " + time.Duration(*st.Advance).String()
	case "fire_alarm":
		return fmt.Sprintf("fire_alarm key=%q", st.FireAlarm.Key)
	case "restart":
		return fmt.Sprintf("restart key=%q", st.Restart.Key)
	case "sql_fail":
		return "sql_fail " + st.SQLFail.Mode
	case "expect_sql":
		return "expect_sql " + truncate(st.ExpectSQL.Query, 120)
	case "expect_storage":
		return fmt.Sprintf("expect_storage key=%q", st.ExpectStorage.Key)
	case "expect_alarm":
		return fmt.Sprintf("expect_alarm key=%q", st.ExpectAlarm.Key)
	case "expect_log":
		return "expect_log " + st.ExpectLog.String()
	case "expect_no_log":
		return "expect_no_log " + st.ExpectNoLog.String()
	case "expect_analytics":
		return "expect_analytics"
	}
	return st.Kind()
}

func fetchMethod(f *Fetch) string {
	if f.Method == "" {
		return "GET"
	}
	return strings.ToUpper(f.Method)
}

func fetchPath(f *Fetch) string {
	if f.Path == "" {
		return "/"
	}
	return f.Path
}

// do runs a step that is not a repeat.
func (w *world) do(ctx context.Context, st *Step) *Failure {
	switch st.Kind() {
	case "fetch":
		return w.fetch(ctx, st.Fetch, st.Expect)
	case "advance":
		if err := w.advanceTo(ctx, w.clock.Now().Add(time.Duration(*st.Advance))); err != nil {
			return &Failure{Message: err.Error()}
		}
	case "fire_alarm":
		return w.fireAlarm(ctx, st.FireAlarm.Key)
	case "sql_fail":
		w.sql.set(st.SQLFail.Mode, st.SQLFail.Times)
	case "restart":
		shard, err := w.shard(st.Restart.Key)
		if err != nil {
			return &Failure{Message: err.Error()}
		}
		if err := w.ns.Restart(ctx, shard); err != nil {
			return &Failure{Message: fmt.Sprintf("restart shard %s: %v", shard, err)}
		}
	case "expect_sql":
		return w.expectSQL(ctx, st.ExpectSQL)
	case "expect_storage":
		return w.expectStorage(ctx, st.ExpectStorage)
	case "expect_alarm":
		return w.expectAlarm(ctx, st.ExpectAlarm)
	case "expect_log":
		return w.expectLog(st.ExpectLog)
	case "expect_no_log":
		return w.expectNoLog(st.ExpectNoLog)
	case "expect_analytics":
		return w.expectAnalytics(st.ExpectAnalytics)
	default:
		return &Failure{Message: "step has no action"}
	}
	return nil
}

// outcome is what a fetch produced, as the edge API would answer it.
type outcome struct {
	status  int
	header  []abi.Header
	body    []byte
	hostErr error  // the host failed the fetch
	code    string // host.ErrorStatus code of hostErr
}

func outcomeOf(resp *abi.Response, err error) outcome {
	if err != nil {
		status, code := host.ErrorStatus(err)
		body, _ := encodeJSON(httpx.ErrorBody{Error: httpx.ErrorDetail{Code: code, Message: err.Error()}})
		return outcome{status: status, body: body, hostErr: err, code: code,
			header: []abi.Header{{Name: "Content-Type", Value: "application/json"}}}
	}
	return outcome{status: resp.Status, header: resp.Header, body: resp.Body}
}

func (o outcome) String() string {
	if o.hostErr != nil {
		return fmt.Sprintf("host error %s (status %d): %s", o.code, o.status, truncate(o.hostErr.Error(), 600))
	}
	body := string(o.body)
	if json.Valid(o.body) {
		body = compactJSON(o.body)
	}
	return fmt.Sprintf("status %d, body %s", o.status, truncate(body, 600))
}

func (w *world) fetch(ctx context.Context, f *Fetch, e *Expect) *Failure {
	req := &abi.Request{Method: fetchMethod(f), Path: fetchPath(f), Header: sortedHeaders(f.Headers)}
	switch {
	case f.Body != nil:
		req.Body = []byte(*f.Body)
	case len(f.JSON) > 0:
		req.Body = []byte(compactJSON(f.JSON))
		if abi.GetHeader(req.Header, "Content-Type") == "" {
			req.Header = append(req.Header, abi.Header{Name: "Content-Type", Value: "application/json"})
		}
	}
	if _, err := w.shard(f.Key); err != nil {
		return &Failure{Message: err.Error()}
	}
	resp, err := w.ns.Fetch(ctx, f.Key, req)
	o := outcomeOf(resp, err)
	w.logf("  → %s", strings.ReplaceAll(o.String(), "\n", "\n      "))
	if ctx.Err() != nil {
		return &Failure{Message: "the fetch did not finish: " + context.Cause(ctx).Error(), Got: o.String()}
	}
	// An alarm the event set in the past fires at once, as on a real host.
	if err := w.settle(ctx); err != nil {
		return &Failure{Message: "after the fetch: " + err.Error()}
	}
	if msgs := checkFetch(e, o); len(msgs) > 0 {
		return &Failure{Message: strings.Join(msgs, "; "), Expected: describeExpect(e), Got: o.String()}
	}
	return nil
}

// checkFetch returns what in o fails e.
func checkFetch(e *Expect, o outcome) []string {
	var msgs []string
	switch {
	case e == nil || (e.Status == nil && e.Error == ""):
		if o.hostErr != nil {
			msgs = append(msgs, "the fetch failed in the host ("+o.code+")")
		} else if o.status/100 != 2 {
			msgs = append(msgs, fmt.Sprintf("status: want 2xx, got %d", o.status))
		}
	case e.Error != "":
		if o.hostErr == nil {
			msgs = append(msgs, fmt.Sprintf("error: want host error %s, but the plugin answered status %d", e.Error, o.status))
		} else if o.code != e.Error {
			msgs = append(msgs, fmt.Sprintf("error: want %s, got %s", e.Error, o.code))
		}
	}
	if e == nil {
		return msgs
	}
	if e.Status != nil && !e.Status.Match(o.status) {
		msgs = append(msgs, fmt.Sprintf("status: want %s, got %d", e.Status, o.status))
	}
	if len(e.JSON) > 0 {
		want, err := decodeJSON(e.JSON)
		if err != nil {
			msgs = append(msgs, "expect.json: "+err.Error())
		} else if got, err := decodeJSON(o.body); err != nil {
			msgs = append(msgs, "body is not JSON: "+err.Error())
		} else if d := jsonSubset(want, got, "$"); d != "" {
			msgs = append(msgs, "json "+d)
		}
	}
	if e.Body != nil && string(o.body) != *e.Body {
		msgs = append(msgs, fmt.Sprintf("body: want %q, got %q", truncate(*e.Body, 300), truncate(string(o.body), 300)))
	}
	if e.BodyContains != "" && !strings.Contains(string(o.body), e.BodyContains) {
		msgs = append(msgs, fmt.Sprintf("body does not contain %q", e.BodyContains))
	}
	for _, h := range sortedHeaders(e.Headers) {
		if got := abi.GetHeader(o.header, h.Name); got != h.Value {
			msgs = append(msgs, fmt.Sprintf("header %s: want %q, got %q", h.Name, h.Value, got))
		}
	}
	return msgs
}

// describeExpect renders what a fetch step expects.
func describeExpect(e *Expect) string {
	if e == nil {
		return "status 2xx"
	}
	var parts []string
	switch {
	case e.Error != "":
		parts = append(parts, "host error "+e.Error)
	case e.Status == nil:
		parts = append(parts, "status 2xx")
	}
	if e.Status != nil {
		parts = append(parts, "status "+e.Status.String())
	}
	if len(e.JSON) > 0 {
		parts = append(parts, "json "+truncate(compactJSON(e.JSON), 400))
	}
	if e.Body != nil {
		parts = append(parts, "body "+strconv.Quote(truncate(*e.Body, 300)))
	}
	if e.BodyContains != "" {
		parts = append(parts, "body containing "+strconv.Quote(e.BodyContains))
	}
	for _, h := range sortedHeaders(e.Headers) {
		parts = append(parts, fmt.Sprintf("header %s: %q", h.Name, h.Value))
	}
	return strings.Join(parts, ", ")
}

func (w *world) fireAlarm(ctx context.Context, key string) *Failure {
	shard, err := w.shard(key)
	if err != nil {
		return &Failure{Message: err.Error()}
	}
	at, ok, err := w.alarm(ctx, shard)
	if err != nil {
		return &Failure{Message: err.Error()}
	}
	if !ok {
		return &Failure{Message: fmt.Sprintf("shard %s has no alarm to fire", shard), Expected: "an alarm set", Got: "no alarm"}
	}
	target := time.UnixMilli(at)
	if now := w.clock.Now(); target.Before(now) {
		target = now
	}
	w.logf("  → clock to %s", fmtTime(target))
	if err := w.advanceTo(ctx, target); err != nil {
		return &Failure{Message: err.Error()}
	}
	return nil
}

func (w *world) expectSQL(ctx context.Context, e *ExpectSQL) *Failure {
	args := make([]any, len(e.Args))
	for i, a := range e.Args {
		args[i], _ = sqlArg(a) // checked by Validate
	}
	// The query runs as a plugin's would, through the binding: the same
	// placeholders and values on SQLite and PostgreSQL.
	var rs []abi.Result
	var err error
	if w.binding.ShardSQL {
		rs, err = w.shardQuery(ctx, e.Key, abi.Statement{SQL: e.Query, Args: args})
	} else {
		rs, err = w.db.Batch(ctx, []abi.Statement{{SQL: e.Query, Args: args}})
	}
	if err != nil {
		return &Failure{Message: "query failed: " + err.Error(), Expected: show(e.Rows)}
	}
	cols := rs[0].Columns
	got := [][]any{}
	for _, row := range rs[0].Rows {
		for i := range row {
			row[i] = sqlValue(row[i])
		}
		got = append(got, row)
	}
	if d := rowsDiff(e.Rows, got); d != "" {
		return &Failure{Message: d, Expected: "rows " + show(e.Rows), Got: "rows " + show(got),
			Detail: "columns: " + strings.Join(cols, ", ")}
	}
	return nil
}

func (w *world) expectStorage(ctx context.Context, e *ExpectStorage) *Failure {
	shard, err := w.shard(e.Key)
	if err != nil {
		return &Failure{Message: err.Error()}
	}
	all, err := ShardStorage(ctx, w.ns, shard, abi.ListOptions{})
	if err != nil {
		return &Failure{Message: err.Error()}
	}
	got := make(map[string]string, len(all))
	var withPrefix []string
	for _, kv := range all {
		got[kv.Key] = string(kv.Value)
		if strings.HasPrefix(kv.Key, e.Prefix) {
			withPrefix = append(withPrefix, kv.Key)
		}
	}
	var msgs, want []string
	if e.Count != nil {
		want = append(want, fmt.Sprintf("%d keys with prefix %q", *e.Count, e.Prefix))
		if len(withPrefix) != *e.Count {
			msgs = append(msgs, fmt.Sprintf("count of keys with prefix %q: want %d, got %d", e.Prefix, *e.Count, len(withPrefix)))
		}
	}
	if e.Keys != nil {
		want = append(want, fmt.Sprintf("keys with prefix %q: %s", e.Prefix, show(e.Keys)))
		if !slices.Equal(e.Keys, withPrefix) {
			msgs = append(msgs, fmt.Sprintf("keys with prefix %q: want %s, got %s", e.Prefix, show(e.Keys), show(withPrefix)))
		}
	}
	if e.Entries != nil {
		want = append(want, "entries "+show(e.Entries))
		for _, k := range slices.Sorted(maps.Keys(e.Entries)) {
			v, ok := got[k]
			switch wv := e.Entries[k]; {
			case wv == nil && ok:
				msgs = append(msgs, fmt.Sprintf("key %q: want absent, got %q", k, truncate(v, 200)))
			case wv != nil && !ok:
				msgs = append(msgs, fmt.Sprintf("key %q: want %q, absent", k, truncate(*wv, 200)))
			case wv != nil && v != *wv:
				msgs = append(msgs, fmt.Sprintf("key %q: want %q, got %q", k, truncate(*wv, 200), truncate(v, 200)))
			}
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return &Failure{
		Message:  strings.Join(msgs, "; "),
		Expected: strings.Join(want, ", "),
		Got:      fmt.Sprintf("%d keys in the shard, %d with prefix %q", len(all), len(withPrefix), e.Prefix),
		Detail:   storageDiff(w.binding.name()+"/"+shard, e, all),
	}
}

// storageDiff renders the shard's keys against the expectation: "-" lines
// are expected and missing or different, "+" lines are present and not
// expected, others are context.
func storageDiff(shard string, e *ExpectStorage, all []abi.KV) string {
	const maxLines = 60
	got := make(map[string]string, len(all))
	for _, kv := range all {
		got[kv.Key] = string(kv.Value)
	}
	keySet := map[string]bool{}
	for _, kv := range all {
		keySet[kv.Key] = true
	}
	for k := range e.Entries {
		keySet[k] = true
	}
	wantKeys := map[string]bool{}
	for _, k := range e.Keys {
		keySet[k] = true
		wantKeys[k] = true
	}
	val := func(s string) string { return strconv.Quote(truncate(s, 120)) }
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(keySet)) {
		gv, present := got[k]
		wv, constrained := e.Entries[k]
		switch {
		case constrained && wv == nil && present:
			lines = append(lines, fmt.Sprintf("+ %s = %s", k, val(gv)))
		case constrained && wv == nil:
			// absent as expected
		case constrained && !present:
			lines = append(lines, fmt.Sprintf("- %s = %s", k, val(*wv)))
		case constrained && gv != *wv:
			lines = append(lines, fmt.Sprintf("- %s = %s", k, val(*wv)), fmt.Sprintf("+ %s = %s", k, val(gv)))
		case e.Keys != nil && wantKeys[k] && !present:
			lines = append(lines, fmt.Sprintf("- %s", k))
		case e.Keys != nil && !wantKeys[k] && present && strings.HasPrefix(k, e.Prefix):
			lines = append(lines, fmt.Sprintf("+ %s = %s", k, val(gv)))
		case present:
			lines = append(lines, fmt.Sprintf("  %s = %s", k, val(gv)))
		}
	}
	if len(lines) > maxLines {
		lines = append(lines[:maxLines], fmt.Sprintf("  … %d more", len(lines)-maxLines))
	}
	if len(lines) == 0 {
		lines = []string{"  (the shard has no keys)"}
	}
	return fmt.Sprintf("storage of shard %s (- expected, + actual):\n  %s", shard, strings.Join(lines, "\n  "))
}

func (w *world) expectAlarm(ctx context.Context, e *ExpectAlarm) *Failure {
	shard, err := w.shard(e.Key)
	if err != nil {
		return &Failure{Message: err.Error()}
	}
	at, ok, err := w.alarm(ctx, shard)
	if err != nil {
		return &Failure{Message: err.Error()}
	}
	now := w.clock.Now()
	got := "no alarm"
	if ok {
		got = "alarm at " + fmtTime(time.UnixMilli(at)) + ", in " + time.UnixMilli(at).Sub(now).String()
	}
	var want time.Time
	switch {
	case e.None:
		if ok {
			return &Failure{Message: "an alarm is set", Expected: "no alarm", Got: got}
		}
		return nil
	case e.In != nil:
		want = now.Add(time.Duration(*e.In))
	default:
		want, _ = time.Parse(time.RFC3339Nano, e.At) // checked by Validate
	}
	expected := "alarm at " + fmtTime(want) + ", in " + want.Sub(now).String()
	if !ok {
		return &Failure{Message: "no alarm is set", Expected: expected, Got: got}
	}
	if d := time.UnixMilli(at).Sub(want); d < -time.Millisecond || d > time.Millisecond {
		return &Failure{Message: fmt.Sprintf("alarm is off by %v", d), Expected: expected, Got: got}
	}
	return nil
}

func (w *world) expectLog(e *ExpectLog) *Failure {
	recs := w.logs.records()
	var matched []logRecord
	for _, r := range recs {
		if e.matches(r) {
			matched = append(matched, r)
		}
	}
	switch {
	case e.Count != nil && len(matched) == *e.Count:
		return nil
	case e.Count == nil && len(matched) > 0:
		return nil
	}
	f := &Failure{Expected: "a record with " + e.String(), Got: fmt.Sprintf("%d matching records", len(matched))}
	if e.Count != nil {
		f.Expected = fmt.Sprintf("%d records with %s", *e.Count, e.String())
		f.Message = fmt.Sprintf("want %d matching log records, got %d", *e.Count, len(matched))
	} else {
		f.Message = "no matching log record"
	}
	var near []string
	for _, r := range recs {
		if !e.matches(r) && e.nearMiss(r) && len(near) < 5 {
			near = append(near, truncate(r.raw, 600))
		}
	}
	switch {
	case len(near) > 0:
		f.Detail = "records with that code or message but other fields:\n  " + strings.Join(near, "\n  ")
	case e.Code != "":
		f.Detail = "codes logged: " + show(loggedCodes(recs))
	}
	return f
}

func loggedCodes(recs []logRecord) []string {
	set := map[string]bool{}
	for _, r := range recs {
		if c, ok := r.field("code"); ok {
			set[c] = true
		}
	}
	return append([]string{}, slices.Sorted(maps.Keys(set))...)
}

func (w *world) expectNoLog(e *ExpectLog) *Failure {
	var matched []string
	for _, r := range w.logs.records() {
		if e.matches(r) {
			matched = append(matched, truncate(r.raw, 600))
		}
	}
	if len(matched) == 0 {
		return nil
	}
	return &Failure{
		Message:  fmt.Sprintf("%d matching log records", len(matched)),
		Expected: "no record with " + e.String(),
		Got:      strings.Join(matched[:min(len(matched), 3)], "\n  "),
	}
}

func (w *world) expectAnalytics(e *ExpectAnalytics) *Failure {
	n := 0
	if e.Dataset != "" {
		n = len(w.rec.Points(e.Dataset))
	} else {
		for _, ds := range w.rec.Datasets() {
			n += len(w.rec.Points(ds))
		}
	}
	if n == *e.Count {
		return nil
	}
	where := "in all datasets"
	if e.Dataset != "" {
		where = "in dataset " + strconv.Quote(e.Dataset)
	}
	return &Failure{
		Message:  fmt.Sprintf("data points %s: want %d, got %d", where, *e.Count, n),
		Expected: fmt.Sprintf("%d data points", *e.Count),
		Got:      fmt.Sprintf("%d data points (datasets written: %s)", n, show(w.rec.Datasets())),
	}
}
