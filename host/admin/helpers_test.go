package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/rs/zerolog"
)

const token = "s3cret-admin-token"

// syncBuf captures a host log from concurrent writers.
type syncBuf = testutil.LogBuffer

// fixture is a host with a per-name COUNTER and a sharded SHARDED binding
// (both the counter example), its edge API and its admin API, each on its
// own 127.0.0.1:0 listener.
type fixture struct {
	h     *host.Host
	edge  *httptest.Server
	admin *httptest.Server
	logs  *syncBuf
}

func counterWasm(t testing.TB, version string) []byte {
	t.Helper()
	b, err := os.ReadFile(testutil.Plugin(t, "examples/counter", "-X main.version="+version))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newFixture starts the fixture; mutate, if given, adjusts the host's
// configuration first.
func newFixture(t *testing.T, opts admin.Options, mutate ...func(*host.Config)) *fixture {
	t.Helper()
	logs := &syncBuf{}
	cfg := host.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.CacheDir = testutil.CacheDir()
	cfg.Logger = zerolog.New(logs)
	v1 := testutil.Plugin(t, "examples/counter", "-X main.version=test")
	cfg.Bindings = []host.Binding{
		{Name: "COUNTER", Module: v1},
		{Name: "SHARDED", Module: v1, Shards: 4},
	}
	for _, m := range mutate {
		m(&cfg)
	}
	h, err := host.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("host.New: %v", err)
	}
	if opts.Token == "" {
		opts.Token = token
	}
	opts.Logger = zerolog.New(logs)
	srv, err := admin.New(h, opts)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{h: h, edge: httptest.NewServer(h.Handler()), admin: httptest.NewServer(srv.Handler()), logs: logs}
	t.Cleanup(func() {
		f.edge.Close()
		f.admin.Close()
		h.Close(context.Background())
	})
	return f
}

// do calls the admin API with the token and decodes a JSON answer into out
// (if non-nil); it returns the status and the raw body.
func (f *fixture) do(t *testing.T, method, path string, body []byte, out any) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.admin.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, b
}

// edgeCall calls the edge API and decodes the counter's reply.
func (f *fixture) edgeCall(t *testing.T, method, path string) (counterReply, int) {
	t.Helper()
	req, _ := http.NewRequest(method, f.edge.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var r counterReply
	json.NewDecoder(resp.Body).Decode(&r)
	return r, resp.StatusCode
}

type counterReply struct {
	Count   int    `json:"count"`
	Version string `json:"version"`
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func errorOf(t *testing.T, b []byte) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	return e
}
