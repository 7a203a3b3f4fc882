package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// syncBuf is the tests' log sink, testutil.LogBuffer.
type syncBuf struct{ testutil.LogBuffer }

// count returns how many log lines carry code.
func (s *syncBuf) count(code string) int { return s.Count(code) }

// fixture is an edge API behind a real HTTP server on 127.0.0.1:0, over a
// real SQLite file.
type fixture struct {
	t    *testing.T
	api  *API
	db   *sqldb.DB
	srv  *httptest.Server
	logs *syncBuf
	reg  *prometheus.Registry
}

const testSecret = "0123456789abcdef0123456789abcdef-test"

// testConfig is a config with a JWT secret and the trusted header.
func testConfig() Config {
	c := DefaultConfig()
	c.Auth.JWTSecret = testSecret
	c.Auth.TrustUserHeader = "X-User-Id"
	return c
}

// openDB is a SQLite file migrated with the edge API's schema.
func openDB(t *testing.T) *sqldb.DB {
	t.Helper()
	return testutil.SQL(t, "", testutil.EdgeSchema(t))
}

// newFixture starts the API; deps.DB, Logger and Registerer are filled in
// when unset.
// eachMode runs f as a subtest in each pipeline mode: primary, shadow,
// off.
func eachMode(t *testing.T, f func(t *testing.T, mode Mode)) {
	for _, mode := range []Mode{ModePrimary, ModeShadow, ModeOff} {
		t.Run(string(mode), func(t *testing.T) { f(t, mode) })
	}
}

func newFixture(t *testing.T, cfg Config, deps Deps) *fixture {
	t.Helper()
	f := &fixture{t: t, logs: &syncBuf{}, reg: prometheus.NewRegistry()}
	if deps.DB == nil {
		deps.DB = openDB(t)
	}
	f.db = deps.DB
	deps.Logger = zerolog.New(f.logs)
	deps.Registerer = f.reg
	api, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("edge.New: %v", err)
	}
	f.api = api
	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFound()
	r.MethodNotAllowedHandler = httpx.MethodNotAllowed()
	api.Routes(r)
	r.Handle("/metrics", promhttp.HandlerFor(f.reg, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	r.HandleFunc("/test/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	f.srv = httptest.NewServer(r)
	t.Cleanup(func() {
		f.srv.Close()
		api.Close()
	})
	return f
}

// reply is a decoded HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

// errCode returns the error envelope's code ("" if none).
func (r reply) errCode() string {
	var e httpx.ErrorBody
	if json.Unmarshal(r.body, &e) != nil {
		return ""
	}
	return e.Error.Code
}

// do sends a request as user ("" for none) and returns the answer.
func (f *fixture) do(method, path, user string, body any) reply {
	f.t.Helper()
	h := map[string]string{}
	if user != "" {
		h["X-User-Id"] = user
	}
	return f.doH(method, path, h, body)
}

// doH sends a request with headers and returns the answer.
func (f *fixture) doH(method, path string, headers map[string]string, body any) reply {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// scalar runs a one-value query.
func (f *fixture) scalar(q string, args ...any) int64 {
	f.t.Helper()
	var n int64
	if err := f.db.SQL().QueryRow(q, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// waitFor polls cond for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, d, what, cond)
}

// fakeShards is an in-memory stand-in for the three plugins, speaking
// PROTOCOLS.md, used by the unit tests (the integration tests run the
// real plugins).
type fakeShards struct {
	n     int
	db    *sqldb.DB // counter flushes write here
	mu    sync.Mutex
	calls atomic.Int64
	// rate limits: count per key (windows never roll in unit tests)
	counts map[string]int
	// runtime events buffered, by id
	events map[string]string
	// counter deltas buffered: table\tid\tcolumn → sum
	deltas map[string]int64
	shadow atomic.Int64 // shadow increments acknowledged
}

func newFakeShards(n int, db *sqldb.DB) *fakeShards {
	return &fakeShards{n: n, db: db, counts: map[string]int{}, events: map[string]string{}, deltas: map[string]int64{}}
}

func (f *fakeShards) Shards() int { return f.n }

func (f *fakeShards) FetchShard(ctx context.Context, shard string, req *abi.Request) (*abi.Response, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	lines := strings.Split(strings.TrimSuffix(string(req.Body), "\n"), "\n")
	switch {
	case req.Path == "/check":
		type b struct {
			Key          string `json:"key"`
			Allowed      bool   `json:"allowed"`
			Limit        int    `json:"limit"`
			Remaining    int    `json:"remaining"`
			WindowMS     int64  `json:"window_ms"`
			ResetMS      int64  `json:"reset_ms"`
			RetryAfterMS int64  `json:"retry_after_ms"`
		}
		out := struct {
			Allowed bool `json:"allowed"`
			Buckets []b  `json:"buckets"`
		}{Allowed: true}
		for _, l := range lines {
			p := strings.Split(l, "\t")
			limit, _ := strconv.Atoi(p[1])
			w, _ := strconv.ParseInt(p[2], 10, 64)
			ok := f.counts[p[0]] < limit
			out.Allowed = out.Allowed && ok
			st := b{Key: p[0], Allowed: ok, Limit: limit, Remaining: max(0, limit-f.counts[p[0]]-1), WindowMS: w, ResetMS: time.Now().UnixMilli() + w}
			if !ok {
				st.RetryAfterMS = 1500
			}
			out.Buckets = append(out.Buckets, st)
		}
		if out.Allowed {
			for _, l := range lines {
				f.counts[strings.Split(l, "\t")[0]]++
			}
		}
		return jsonResp(200, out), nil
	case req.Path == "/enqueue":
		for _, l := range lines {
			if strings.Count(l, "\t") != 6 {
				return jsonResp(400, map[string]any{"error": map[string]string{"code": "bad_line", "message": l}}), nil
			}
			f.events[strings.SplitN(l, "\t", 2)[0]] = l
		}
		return jsonResp(202, map[string]int{"accepted": len(lines), "buffered": len(f.events)}), nil
	case req.Path == "/increment?mode=shadow":
		f.shadow.Add(int64(len(lines)))
		return jsonResp(202, map[string]bool{"ok": true, "shadow": true}), nil
	case req.Path == "/increment":
		for _, l := range lines {
			p := strings.Split(l, "\t")
			n, _ := strconv.ParseInt(p[3], 10, 64)
			f.deltas[strings.Join(p[:3], "\t")] += n
		}
		return jsonResp(202, map[string]any{"ok": true, "buffered": len(f.deltas)}), nil
	case req.Path == "/flush":
		if err := f.flushLocked(ctx); err != nil {
			return jsonResp(503, map[string]any{"error": map[string]string{"code": "flush_failed", "message": err.Error()}}), nil
		}
		return jsonResp(200, map[string]any{"ok": true}), nil
	case req.Path == "/pending":
		return jsonResp(200, map[string]int{"buffered": len(f.deltas), "inflight": 0, "seq": 0}), nil
	}
	return jsonResp(404, map[string]any{"error": map[string]string{"code": "not_found", "message": req.Path}}), nil
}

// flushLocked applies buffered counter deltas to SQL (clamped).
func (f *fakeShards) flushLocked(ctx context.Context) error {
	if len(f.deltas) == 0 {
		return nil
	}
	var ds []delta
	for k, n := range f.deltas {
		p := strings.Split(k, "\t")
		ds = append(ds, delta{Table: p[0], ID: p[1], Column: p[2], N: n})
	}
	tx, err := f.db.SQL().BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := applyLegacy(ctx, tx, ds, time.Now()); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	clear(f.deltas)
	return nil
}

func (f *fakeShards) flush(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.flushLocked(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeShards) eventCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.events)
}

func jsonResp(status int, v any) *abi.Response {
	b, _ := json.Marshal(v)
	return &abi.Response{Status: status, Body: b, Header: []abi.Header{{Name: "Content-Type", Value: "application/json"}}}
}

// failingShards wraps Shards and fails calls while fail is set.
type failingShards struct {
	inner Shards
	fail  atomic.Bool
	calls atomic.Int64
}

func failing(s Shards) *failingShards {
	f := &failingShards{inner: s}
	f.fail.Store(true)
	return f
}

var errInjected = errors.New("injected shard failure")

func (f *failingShards) FetchShard(ctx context.Context, shard string, req *abi.Request) (*abi.Response, error) {
	f.calls.Add(1)
	if f.fail.Load() {
		return nil, fmt.Errorf("shard %s: %w", shard, errInjected)
	}
	return f.inner.FetchShard(ctx, shard, req)
}

func (f *failingShards) Shards() int { return f.inner.Shards() }
