package admin_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

const token = "s3cret-admin-token"

// fixture is a host with a per-name COUNTER and a sharded SHARDED binding
// (both the counter example), its HTTP routes and its admin API, each on
// its own 127.0.0.1:0 listener (testutil.Host).
type fixture struct {
	h     *host.Host
	edge  *harness.Server
	admin *harness.Server
	logs  *testutil.LogBuffer
}

func counterWasm(t testing.TB, version string) []byte {
	t.Helper()
	return testutil.PluginBytes(t, "examples/counter", "-X main.version="+version)
}

// newFixture starts the fixture; mutate, if given, adjusts the host's
// configuration first.
func newFixture(t *testing.T, opts admin.Options, mutate ...func(*host.Config)) *fixture {
	t.Helper()
	v1 := testutil.Plugin(t, "examples/counter", "-X main.version=test")
	if opts.Token == "" {
		opts.Token = token
	}
	hopts := []harness.Option{
		harness.Bindings(host.Binding{Name: "COUNTER", Module: v1}, host.Binding{Name: "SHARDED", Module: v1, Shards: 4}),
		harness.HTTP(), harness.Admin(opts),
	}
	for _, m := range mutate {
		hopts = append(hopts, harness.Configure(m))
	}
	env := testutil.Host(t, hopts...)
	return &fixture{h: env.Host, edge: env.HTTP, admin: env.Admin, logs: env.Logs}
}

// do calls the admin API with the token and decodes a JSON answer into out
// (if non-nil); it returns the status and the raw body.
func (f *fixture) do(t *testing.T, method, path string, body []byte, out any) (int, []byte) {
	t.Helper()
	st, b := testutil.Do(t, method, f.admin.URL+path, string(body), "Authorization", testutil.Bearer(token))
	if out != nil && st < 300 {
		if err := json.Unmarshal([]byte(b), out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return st, []byte(b)
}

// wantErrorCodes GETs each path and wants an error (4xx or 5xx) with the
// path's code.
func (f *fixture) wantErrorCodes(t *testing.T, codes map[string]string) {
	t.Helper()
	for path, code := range codes {
		if st, b := f.do(t, "GET", path, nil, nil); st < 400 || errorOf(t, b).Error.Code != code {
			t.Errorf("%s: %d %s, want code %s", path, st, b, code)
		}
	}
}

// edgeCall calls the edge API and decodes the counter's reply.
func (f *fixture) edgeCall(t *testing.T, method, path string) (testutil.CounterReply, int) {
	t.Helper()
	req, _ := http.NewRequest(method, f.edge.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var r testutil.CounterReply
	json.NewDecoder(resp.Body).Decode(&r)
	return r, resp.StatusCode
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
