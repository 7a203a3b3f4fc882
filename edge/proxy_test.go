package edge

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// upstream is a test server the proxy may reach (allow-listed).
type upstream struct {
	srv  *httptest.Server
	hits atomic.Int64
	last atomic.Pointer[http.Request]
}

func newUpstream(t *testing.T, other string) *upstream {
	t.Helper()
	u := &upstream{}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "drop me")
		w.Header().Set("Set-Cookie", "session=stolen")
		w.Header().Set("X-Upstream", "yes")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello from upstream")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	mux.HandleFunc("/redirect-loopback", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other+"/hello", http.StatusFound)
	})
	mux.HandleFunc("/redirect-localhost", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:"+strconv.Itoa(r.Context().Value(http.LocalAddrContextKey).(net.Addr).(*net.TCPAddr).Port)+"/hello", http.StatusFound)
	})
	mux.HandleFunc("/redirect-metadata", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	})
	mux.HandleFunc("/redirect-ok", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/hello", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(2<<20))
		w.Write(make([]byte, 2<<20))
	})
	mux.HandleFunc("/big-chunked", func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for i := 0; i < 32; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	})
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		u.last.Store(r)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) hostPort() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func proxyFixture(t *testing.T, mutate func(*Config)) (*fixture, *upstream, *fakeShards) {
	t.Helper()
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a refused address was reached: %s", r.URL)
	}))
	t.Cleanup(forbidden.Close)
	up := newUpstream(t, forbidden.URL)
	f, fs := fakeFixture(t, func(c *Config, _ *Deps, _ *fakeShards) {
		c.Proxy.AllowHosts = []string{up.hostPort()}
		c.Proxy.MaxResponseBytes = 1 << 20
		c.Proxy.Timeout = 500 * time.Millisecond
		c.Proxy.UserLimit = Limit{1000, time.Minute}
		if mutate != nil {
			mutate(c)
		}
	})
	return f, up, fs
}

func proxyPath(target string) string { return "/proxy?url=" + url.QueryEscape(target) }

func TestProxyForwardsAndStrips(t *testing.T) {
	f, up, _ := proxyFixture(t, nil)
	r := f.doH("GET", proxyPath(up.srv.URL+"/hello"), map[string]string{
		"X-User-Id": "alice", "Cookie": "mine=1", "Accept": "text/plain", "X-Secret": "s",
	}, nil)
	if r.status != 200 || string(r.body) != "hello from upstream" {
		t.Fatalf("%d %q", r.status, r.body)
	}
	for _, h := range []string{"X-Hop", "Set-Cookie"} {
		if r.header.Get(h) != "" {
			t.Errorf("header %s passed through", h)
		}
	}
	if r.header.Get("X-Upstream") != "yes" || r.header.Get("Content-Security-Policy") != "sandbox" {
		t.Errorf("headers %v", r.header)
	}
	if r.header.Get("RateLimit-Policy") == "" || r.header.Get("RateLimit") == "" {
		t.Errorf("no RateLimit headers: %v", r.header)
	}
	got := up.last.Load()
	if got.Header.Get("X-User-Id") != "" || got.Header.Get("Cookie") != "" || got.Header.Get("X-Secret") != "" || got.Header.Get("Accept") != "text/plain" {
		t.Errorf("upstream saw headers %v", got.Header)
	}
	r = f.doH("POST", proxyPath(up.srv.URL+"/echo"), map[string]string{"X-User-Id": "alice"}, "posted body")
	if r.status != 200 || string(r.body) != "posted body" {
		t.Fatalf("POST: %d %q", r.status, r.body)
	}
	r = f.do("GET", proxyPath(up.srv.URL+"/redirect-ok"), "alice", nil)
	if r.status != 200 || string(r.body) != "hello from upstream" {
		t.Fatalf("allowed redirect: %d %q", r.status, r.body)
	}
}

func TestProxyRefusesInternalAddresses(t *testing.T) {
	f, up, _ := proxyFixture(t, nil)
	port := strings.Split(up.hostPort(), ":")[1]
	for _, target := range []string{
		"http://127.0.0.1:1/",
		"http://127.0.0.2:" + port + "/hello",
		"http://169.254.169.254/latest/meta-data/",
		"http://[fd00:ec2::254]/latest/meta-data/",
		"http://[::1]:" + port + "/",
		"http://[::ffff:127.0.0.1]:1/",
		"http://0.0.0.0:" + port + "/",
		"http://10.0.0.1/",
		"http://192.168.1.1/",
		"http://100.64.0.1/",
		"http://localhost:" + port + "/hello",
		"http://LOCALHOST./",
		up.srv.URL + "/redirect-loopback",
		up.srv.URL + "/redirect-localhost",
		up.srv.URL + "/redirect-metadata",
	} {
		r := f.do("GET", proxyPath(target), "alice", nil)
		if r.status != 403 || r.errCode() != "forbidden_address" {
			t.Errorf("%s: %d %q, want 403 forbidden_address: %s", target, r.status, r.errCode(), r.body)
		}
	}
}

func TestProxyBadRequestsAndUpstreamFailures(t *testing.T) {
	f, up, _ := proxyFixture(t, nil)
	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{"/proxy", 400, "bad_url"},
		{"/proxy?url=" + url.QueryEscape("/relative"), 400, "bad_url"},
		{"/proxy?url=" + url.QueryEscape("ftp://example.com/x"), 400, "bad_url"},
		{"/proxy?url=" + url.QueryEscape("http://user:pw@example.com/"), 400, "bad_url"},
		{"/proxy?url=a&url=b", 400, "bad_url"},
		{"/proxy?url=" + url.QueryEscape("http://%zz"), 400, "bad_url"},
		{proxyPath(up.srv.URL + "/big"), 502, "upstream_too_large"},
		{proxyPath(up.srv.URL + "/slow"), 504, "upstream_timeout"},
		{proxyPath(up.srv.URL + "/loop"), 502, "too_many_redirects"},
	} {
		r := f.do("GET", c.path, "alice", nil)
		if r.status != c.status || r.errCode() != c.code {
			t.Errorf("%s: %d %q, want %d %q: %.200s", c.path, r.status, r.errCode(), c.status, c.code, r.body)
		}
	}
	if r := f.do("GET", proxyPath(up.srv.URL+"/hello"), "", nil); r.status != 401 {
		t.Errorf("no auth: %d", r.status)
	}
	// A streamed body over the cap is cut: the client sees a truncated
	// response, never a complete-looking one.
	resp, err := f.srv.Client().Do(mustReq(t, "GET", f.srv.URL+proxyPath(up.srv.URL+"/big-chunked"), "alice"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil || n > 1<<20 {
		t.Fatalf("read %d bytes, err %v; want an error before 1 MiB", n, err)
	}
}

func mustReq(t *testing.T, method, u, user string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-User-Id", user)
	return req
}

func TestProxyRateLimit(t *testing.T) {
	f, up, fs := proxyFixture(t, func(c *Config) {
		c.Proxy.UserLimit = Limit{3, time.Minute}
		c.Proxy.TrustForwardedFor = true
	})
	hdr := map[string]string{"X-User-Id": "alice", "X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
	for i := 0; i < 3; i++ {
		if r := f.doH("GET", proxyPath(up.srv.URL+"/hello"), hdr, nil); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	hits := up.hits.Load()
	r := f.doH("GET", proxyPath(up.srv.URL+"/hello"), hdr, nil)
	if r.status != 429 || r.errCode() != "rate_limited" {
		t.Fatalf("over limit: %d %s", r.status, r.body)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if !strings.Contains(r.header.Get("RateLimit-Policy"), `"user";q=3;w=60`) || !strings.Contains(r.header.Get("RateLimit"), `"user";r=0;t=`) {
		t.Fatalf("RateLimit headers: %q / %q", r.header.Get("RateLimit-Policy"), r.header.Get("RateLimit"))
	}
	if up.hits.Load() != hits {
		t.Fatal("a limited request reached the upstream")
	}
	fs.mu.Lock()
	ipCount := fs.counts["ip:198.51.100.7"]
	fs.mu.Unlock()
	if ipCount != 3 {
		t.Fatalf("ip bucket from X-Forwarded-For counted %d, want 3 (the refused request stops at the user bucket)", ipCount)
	}
	// Another user is not limited.
	if r := f.do("GET", proxyPath(up.srv.URL+"/hello"), "bob", nil); r.status != 200 {
		t.Fatalf("bob: %d", r.status)
	}
}

// TestRateLimitFallbacks: shard down → SQL (0308) still enforces the limit
// and rolls its window; SQL down too → memory (0310).
func TestRateLimitFallbacks(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 30, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	f, up, _ := proxyFixture(t, nil)
	_ = f
	f2, _ := fakeFixture(t, func(c *Config, d *Deps, fs *fakeShards) {
		c.Proxy.AllowHosts = []string{up.hostPort()}
		c.Proxy.UserLimit = Limit{2, time.Minute}
		d.RateLimit = failing(fs)
		d.Now = func() time.Time { return *clock.Load() }
	})
	get := func(user string) int {
		return f2.do("GET", proxyPath(up.srv.URL+"/hello"), user, nil).status
	}
	if s := []int{get("a"), get("a"), get("a")}; s[0] != 200 || s[1] != 200 || s[2] != 429 {
		t.Fatalf("SQL fallback statuses %v, want 200 200 429", s)
	}
	if f2.logs.count(CodeRateLimitSQL) == 0 {
		t.Fatalf("no %s logged", CodeRateLimitSQL)
	}
	if n := f2.scalar(`SELECT SUM(count) FROM proxy_rate_limits WHERE bucket = 'user:a'`); n != 2 {
		t.Fatalf("SQL counted %d for user:a, want 2", n)
	}
	// Two windows later everything has slid out.
	later := now.Add(2 * time.Minute)
	clock.Store(&later)
	if s := get("a"); s != 200 {
		t.Fatalf("after the window: %d", s)
	}
	f2.db.Close()
	if s := []int{get("m"), get("m"), get("m")}; s[0] != 200 || s[1] != 200 || s[2] != 429 {
		t.Fatalf("memory fallback statuses %v, want 200 200 429", s)
	}
	if f2.logs.count(CodeRateLimitMemory) == 0 {
		t.Fatalf("no %s logged", CodeRateLimitMemory)
	}
	m := string(f2.do("GET", "/metrics", "", nil).body)
	for _, want := range []string{
		`edgeshard_edge_fallbacks_total{code="E-VIBECODR-0308",pipeline="ratelimit"}`,
		`edgeshard_edge_fallbacks_total{code="E-VIBECODR-0310",pipeline="ratelimit"}`,
		`edgeshard_proxy_ratelimit_decisions_total{result="limited",store="memory"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestSlidingWindow checks the in-memory limiter's verdicts on the
// sliding window (the same decision as the shard: proto/ratelimit).
func TestSlidingWindow(t *testing.T) {
	b := bucket{Policy: "user", Key: "user:a", Limit: Limit{3, time.Minute}}
	m := newMemLimiter(4)
	at := func(ms int64) time.Time { return time.UnixMilli(ms) }
	for i := 0; i < 3; i++ {
		if st := m.check([]bucket{b}, at(0))[0]; !st.Allowed || st.Remaining != 2-i {
			t.Fatalf("request %d: %+v", i, st)
		}
	}
	// 3 in the window starting at 0: the 4th waits for the next window and
	// for the 3 to decay to 2: 60 s + 20 s.
	if st := m.check([]bucket{b}, at(0))[0]; st.Allowed || st.RetryAfter != 80*time.Second || st.Reset != at(60000) {
		t.Fatalf("4th: %+v", st)
	}
	// At 70 s the previous 3 weigh 3·50/60 = 2.5: not allowed until 80 s.
	if st := m.check([]bucket{b}, at(70000))[0]; st.Allowed || st.RetryAfter != 10*time.Second {
		t.Fatalf("at 70 s: %+v", st)
	}
	// At 80 s they weigh 3·40/60 = 2, so one more fits.
	if st := m.check([]bucket{b}, at(80000))[0]; !st.Allowed || st.Remaining != 0 {
		t.Fatalf("at 80 s: %+v", st)
	}
	// The table stays bounded.
	for i := 0; i < 100; i++ {
		m.check([]bucket{{Policy: "ip", Key: fmt.Sprint("ip:", i), Limit: b.Limit}}, at(80000))
	}
	if len(m.windows) > 4 {
		t.Fatalf("memory limiter holds %d keys, cap 4", len(m.windows))
	}
}

// TestProxyUnreachableKeepsTheCauseInTheLog: an upstream that refuses the
// connection answers 502 with a request id; the cause (here a loopback
// address, elsewhere a resolver's) stays in the log.
func TestProxyUnreachableKeepsTheCauseInTheLog(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL, hostPort := closed.URL, closed.Listener.Addr().String()
	closed.Close()
	f, _, _ := proxyFixture(t, func(c *Config) { c.Proxy.AllowHosts = append(c.Proxy.AllowHosts, hostPort) })
	r := f.do("GET", proxyPath(closedURL+"/x"), "alice", nil)
	body := string(r.body)
	if r.status != 502 || r.errCode() != "upstream_unreachable" || strings.Contains(body, hostPort) ||
		strings.Contains(body, "connect") || !strings.Contains(body, "request id "+r.header.Get("X-Request-Id")) {
		t.Fatalf("unreachable upstream: %d %s", r.status, body)
	}
}
