package host_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// Tests of http_fetch on the real host: the outbound test plugin fetches a
// real HTTP server on 127.0.0.1, which the address guard refuses unless
// the binding lists it in AllowPrivate (fetch_allow_private).

// fetchServer is a local upstream: /ok answers who asked, /slow outlasts
// the fetch timeout, /big exceeds the size cap, /redirect redirects.
func fetchServer(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", "yes")
		fmt.Fprintf(w, "hello %s", r.Header.Get("X-From"))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 2048)))
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// fetchVia asks binding's shard to fetch u and returns its answer.
func (f *fixture) fetchVia(t *testing.T, binding, u string) (string, time.Duration) {
	t.Helper()
	t0 := time.Now()
	resp, err := f.h.Fetch(context.Background(), binding, "k", &abi.Request{Method: "GET", Path: "/fetch?url=" + url.QueryEscape(u)})
	if err != nil {
		t.Fatalf("%s fetching %s: %v", binding, u, err)
	}
	return string(resp.Body), time.Since(t0)
}

func TestHTTPFetch(t *testing.T) {
	srv := fetchServer(t)
	hp := srv.Listener.Addr().String()
	mod := testutil.Plugin(t, outboundPlugin)
	cfg := testutil.HostConfig(t, harness.Bindings(
		// OPEN may reach the local server: the operator listed its
		// host:port as a private destination.
		host.Binding{Name: "OPEN", Module: mod, Calls: []string{"OPEN"}, Fetch: &host.FetchConfig{
			Hosts: []string{"api.example.com"}, AllowPrivate: []string{hp}, Timeout: 300 * time.Millisecond, MaxResponseBytes: 1024}},
		// GUARDED lists 127.0.0.1 and localhost as hosts, but the guard
		// still refuses loopback.
		host.Binding{Name: "GUARDED", Module: mod, Calls: []string{"OPEN"}, Fetch: &host.FetchConfig{Hosts: []string{"127.0.0.1", "localhost", "*.example.com"}}},
	))
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	f := start(t, cfg)
	refused := fmt.Sprintf("err %d: ", abi.ErrnoRefused)
	for _, tc := range []struct {
		name, binding, url, want string
	}{
		{"allowed private", "OPEN", srv.URL + "/ok", "status 200 hello OPEN/k"},
		{"not redirected", "OPEN", srv.URL + "/redirect", "status 302 "},
		{"timeout", "OPEN", srv.URL + "/slow", fmt.Sprintf("err %d: fetch timed out (fetch timeout 300ms", abi.ErrnoDeadline)},
		{"too large", "OPEN", srv.URL + "/big", fmt.Sprintf("err %d: fetch %s/big: response body exceeds 1024 bytes", abi.ErrnoTooLarge, srv.URL)},
		{"host not listed", "OPEN", "https://example.org/", refused + "fetch: host example.org is not allowed for binding OPEN"},
		{"another loopback port", "OPEN", "http://127.0.0.1:1/", refused + "fetch refused: address 127.0.0.1:1 is not allowed (loopback)"},
		{"loopback by address", "GUARDED", srv.URL + "/ok", refused + "fetch refused: address " + hp + " is not allowed (loopback)"},
		{"loopback by name", "GUARDED", "http://localhost:" + srv.URL[strings.LastIndex(srv.URL, ":")+1:] + "/ok", refused + "fetch refused: address localhost:"},
		{"metadata", "GUARDED", "http://169.254.169.254/latest/meta-data/", refused + "fetch refused: address 169.254.169.254:80 is not allowed (metadata)"},
		{"not a URL", "GUARDED", "/relative", fmt.Sprintf("err %d: fetch: \"/relative\" is not an absolute", abi.ErrnoInvalid)},
		{"scheme", "GUARDED", "ftp://x.example.com/", fmt.Sprintf("err %d: url: scheme must be http or https", abi.ErrnoInvalid)},
	} {
		got, took := f.fetchVia(t, tc.binding, tc.url)
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %s fetching %s answered %q, want %q…", tc.name, tc.binding, tc.url, got, tc.want)
		}
		if took > 3*time.Second {
			t.Errorf("%s: took %s", tc.name, took)
		}
	}
	for _, m := range []struct {
		binding, outcome string
		want             float64
	}{{"OPEN", "ok", 2}, {"OPEN", "deadline", 1}, {"OPEN", "too_large", 1}, {"OPEN", "refused", 2}, {"GUARDED", "refused", 3}, {"GUARDED", "invalid", 2}} {
		if got := metricValue(t, reg, "edgeshard_fetches_total", map[string]string{"binding": m.binding, "outcome": m.outcome}); got != m.want {
			t.Errorf("edgeshard_fetches_total{binding=%s,outcome=%s} = %v, want %v", m.binding, m.outcome, got, m.want)
		}
	}
	// A binding without fetch hosts cannot load a module that fetches.
	bad := testutil.HostConfig(t, harness.Bindings(host.Binding{Name: "NOFETCH", Module: mod, Calls: []string{"NOFETCH"}}))
	if _, err := host.New(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "http_fetch") {
		t.Fatalf("a binding without fetch loaded a module importing http_fetch: %v", err)
	}
	for _, fc := range []host.FetchConfig{{Hosts: []string{"*"}}, {Hosts: []string{"https://x.example"}}, {AllowPrivate: []string{"127.0.0.1"}}, {MaxResponseBytes: abi.MaxResponseBody + 1}} {
		bad := testutil.HostConfig(t, harness.Bindings(host.Binding{Name: "BAD", Module: mod, Calls: []string{"BAD"}, Fetch: &fc}))
		if _, err := host.New(context.Background(), bad); err == nil || !strings.Contains(err.Error(), `binding "BAD": fetch`) {
			t.Errorf("fetch config %+v: %v, want it refused", fc, err)
		}
	}
}
