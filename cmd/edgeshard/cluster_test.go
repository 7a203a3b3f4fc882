package main_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/cluster"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/etcdtest"
	"github.com/edgeshard/edgeshard/internal/ownerlog"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/internal/proctest"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

const clusterToken = "cluster-admin-token"

// popHost is one host of a test POP: the real binary.
type popHost struct {
	node  string
	admin string
	*proctest.Proc
	past []string // what its earlier runs logged
}

// restart starts the host again on its data, keeping what it logged.
func (h *popHost) restart() {
	h.past = append(h.past, h.Output())
	h.Restart()
}

// log is everything the host logged, over its runs.
func (h *popHost) log() string {
	return strings.Join(append(h.past[:len(h.past):len(h.past)], h.Output()), "\n")
}

// startPOP starts the hosts of a POP on the shared etcd (a prefix of the
// test's own) and one PostgreSQL database, serving the tutorial's
// pageviews shard (per-name objects that flush their totals to SQL on an
// alarm) as PAGEVIEWS.
func startPOP(t *testing.T, nodes ...string) []*popHost { return startPOPShards(t, 0, nodes...) }

// startPOPShards is startPOP with PAGEVIEWS a sharded namespace of shards
// shards (0: per-name).
func startPOPShards(t *testing.T, shards int, nodes ...string) []*popHost {
	return startPOPWith(t, popOptions{shards: shards}, nodes...)
}

// popOptions change the config of a test POP's hosts.
type popOptions struct {
	shards   int    // of PAGEVIEWS (0: per-name)
	top      string // more top-level settings
	bindings string // more [[durable_objects.bindings]]
}

// startPOPWith is startPOP with o.
func startPOPWith(t *testing.T, o popOptions, nodes ...string) []*popHost {
	t.Helper()
	etcd := etcdtest.Shared(t).Endpoint()
	prefix := etcdtest.Prefix(t)
	db := pgtest.DB(t)
	mod := testutil.Plugin(t, "examples/tutorial")
	var hosts []*popHost
	for _, node := range nodes {
		dir := filepath.Join(t.TempDir(), node)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		admin := proctest.FreeAddr(t)
		cfg := fmt.Sprintf(`listen = "{{LISTEN}}"
admin_listen = %q
admin_token = %q
data_dir = "./data"
cache_dir = %q
node_id = %q
log_level = "info"
event_timeout = "5s"
shutdown_grace = "20s"
%s
[[durable_objects.bindings]]
name = "PAGEVIEWS"
module = %q
shards = %d
sql = "DB"
analytics = "AE"
%s

[[d1_databases]]
binding = "DB"
url = %q

[[analytics_engine_datasets]]
binding = "AE"
dataset = "pageviews"
url = "sqlite://./data/analytics.db"

[vars]
FLUSH_EVERY = "2s"

[edge]
enabled = false

[cluster]
etcd = [%q]
advertise = "http://{{LISTEN}}"
lease_ttl = "2s"
prefix = %q
secret = "pop-secret"
`, admin, clusterToken, testutil.CacheDir(), node, o.top, mod, o.shards, o.bindings, db, etcd, prefix)
		p := proctest.Start(t, dir, cfg)
		hosts = append(hosts, &popHost{node: node, admin: admin, Proc: p})
	}
	waitUntil(t, 20*time.Second, "every host sees every member", func() bool {
		for _, h := range hosts {
			if len(h.status(t).Members) != len(hosts) {
				return false
			}
		}
		return true
	})
	return hosts
}

// cli runs the edgeshard binary's admin command against h.
// cmd names the command ("cluster", "evict"); the flags go after it, then
// the arguments.
func (h *popHost) cli(t *testing.T, cmd []string, args ...string) (string, error) {
	t.Helper()
	all := append(append(cmd, "--admin", "http://"+h.admin, "--token", clusterToken), args...)
	c := exec.Command(proctest.Binary(t), all...)
	out, err := c.CombinedOutput()
	return string(out), err
}

// pageOn returns a page name starting with prefix that the placement
// gives to node among nodes.
func pageOn(prefix, node string, nodes ...string) string {
	page := prefix
	for i := 0; cluster.Owner("PAGEVIEWS", page, append([]string{node}, nodes...)) != node; i++ {
		page = fmt.Sprintf("%s-%d", prefix, i)
	}
	return page
}

func (h *popHost) status(t *testing.T) cluster.Status {
	t.Helper()
	var st cluster.Status
	h.adminCall(t, http.MethodGet, "/admin/cluster", &st)
	return st
}

func (h *popHost) adminCall(t *testing.T, method, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+h.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+clusterToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// waitUntil polls every 50 ms: each check asks the hosts over HTTP.
func waitUntil(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	testutil.Poll(t, limit, 50*time.Millisecond, what, ok)
}

// view counts a view of page through h; it returns the status and the
// views the shard answered.
func view(t *testing.T, h *popHost, page string) (int, int64, http.Header) {
	t.Helper()
	resp, err := http.Post(h.URL()+"/do/PAGEVIEWS/"+page+"/view", "text/plain", nil)
	if err != nil {
		t.Fatalf("view %s on %s: %v", page, h.node, err)
	}
	defer resp.Body.Close()
	var r struct{ Views int64 }
	json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r.Views, resp.Header
}

// checkNoOverlap fails the test if two hosts' ownership intervals of a
// shard overlap, or epochs do not grow with time (ownerlog.Check on what
// the hosts' runs logged: the current one, and those restart kept; an
// interval still open ends now). It returns the shard's intervals in
// order.
func checkNoOverlap(t *testing.T, hosts []*popHost, shard string) []ownerlog.Interval {
	t.Helper()
	var ivs []ownerlog.Interval
	for _, h := range hosts {
		for _, run := range append(h.past[:len(h.past):len(h.past)], h.Output()) {
			ivs = append(ivs, ownerlog.Of(ownerlog.Parse(h.node, run, time.Now()), shard)...)
		}
	}
	for _, bad := range ownerlog.Check(ivs) {
		t.Error(bad)
	}
	return ownerlog.Of(ivs, shard)
}

// TestClusterFencingSIGSTOP: an owner frozen past its lease can never
// commit for a shard someone else owns. Host A owns a page (a per-name
// object) with views not yet flushed to SQL; A is frozen (SIGSTOP) past
// its lease; the page is then unavailable (503 shard_unavailable, Retry-
// After) — its storage is on A's disk — until the operator evicts A; B
// takes the page over, fresh, and flushes its own total. A resumes: its
// flush of the old total, due while it was frozen, must not land (SQL
// keeps B's total), it stops serving the page, and every request through
// it is forwarded to B. The hosts' logged ownership intervals of the page
// never overlap.
func TestClusterFencingSIGSTOP(t *testing.T) {
	hosts := startPOP(t, "n-a", "n-b")
	a, b := hosts[0], hosts[1]
	page := pageOn("home", "n-a", "n-b")
	shard := "PAGEVIEWS/" + page

	// Five views through B, forwarded to A, the owner.
	for i := 1; i <= 5; i++ {
		if code, views, _ := view(t, b, page); code != 200 || views != int64(i) {
			t.Fatalf("view %d through b: %d views=%d", i, code, views)
		}
	}
	// A request already inside A when it freezes: its body arrives only
	// once A resumes, after B took the page over.
	late, err := net.Dial("tcp", a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	fmt.Fprintf(late, "POST /do/PAGEVIEWS/%s/view HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n", page)
	time.Sleep(200 * time.Millisecond) // A reads the head and waits for the body
	a.Signal(syscall.SIGSTOP)
	frozen := true
	defer func() {
		if frozen {
			a.Signal(syscall.SIGCONT)
		}
	}()
	waitUntil(t, 15*time.Second, "b sees a gone", func() bool { return len(b.status(t).Members) == 1 })

	code, _, hdr := view(t, b, page)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("page of a frozen host: %d Retry-After=%q, want 503 with Retry-After", code, hdr.Get("Retry-After"))
	}
	var st cluster.Status
	b.adminCall(t, http.MethodGet, "/admin/cluster", &st)
	if len(st.Homeless) != 1 || st.Homeless[0] != "n-a" {
		t.Fatalf("status: homes of missing nodes %v, want [n-a]", st.Homeless)
	}
	// The operator's command, as docs/OPERATIONS.md gives it.
	if out, err := b.cli(t, []string{"cluster", "evict"}, "n-a"); err != nil || !strings.Contains(out, "evicted n-a: 1 per-name object") {
		t.Fatalf("edgeshard cluster evict n-a: %v\n%s", err, out)
	}
	for i := 1; i <= 3; i++ {
		if code, views, _ := view(t, b, page); code != 200 || views != int64(i) {
			t.Fatalf("view %d after evict: %d views=%d (want a fresh object on b)", i, code, views)
		}
	}
	db, err := sql.Open("pgx", dbURLOf(t, b))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sqlViews := func() int64 {
		var v int64
		err := db.QueryRowContext(context.Background(), "SELECT views FROM page_views WHERE page = $1", page).Scan(&v)
		if err != nil && err != sql.ErrNoRows && !strings.Contains(err.Error(), "does not exist") {
			t.Fatal(err) // no table yet: no flush yet
		}
		return v
	}
	waitUntil(t, 15*time.Second, "b flushed its total", func() bool { return sqlViews() == 3 })

	// A resumes: its page's alarm (the flush of views=5) is overdue, and
	// the request inside it goes on. It must not be served by A's stale
	// object (views=6): A forwards it to B (views=4).
	a.Signal(syscall.SIGCONT)
	frozen = false
	late.Write([]byte("x"))
	late.SetReadDeadline(time.Now().Add(20 * time.Second))
	lresp, err := http.ReadResponse(bufio.NewReader(late), nil)
	if err != nil {
		t.Fatalf("the request inside a: %v", err)
	}
	var lv struct{ Views int64 }
	json.NewDecoder(lresp.Body).Decode(&lv)
	lresp.Body.Close()
	if lresp.StatusCode != 200 || lv.Views != 4 {
		t.Fatalf("the request inside a when it froze: %d views=%d, want 200 from b's object (views=4)", lresp.StatusCode, lv.Views)
	}
	waitUntil(t, 15*time.Second, "a rejoined", func() bool { return len(a.status(t).Members) == 2 })
	waitUntil(t, 15*time.Second, "b flushed its new total", func() bool { return sqlViews() == 4 })
	time.Sleep(4 * time.Second) // past a's overdue flush and its retry
	if v := sqlViews(); v != 4 {
		t.Fatalf("SQL holds views=%d for the page: the frozen owner's late flush landed (want b's 4)", v)
	}
	if !strings.Contains(a.Output(), `"message":"shard ownership lost"`) {
		t.Errorf("a never logged that it lost the page:\n%s", a.Output())
	}
	// Through A now: forwarded to B, the page's owner.
	if code, views, _ := view(t, a, page); code != 200 || views != 5 {
		t.Fatalf("view through a after it resumed: %d views=%d, want b's 5", code, views)
	}
	if out, err := a.cli(t, []string{"status"}); err != nil || !strings.Contains(out, "n-a") || !strings.Contains(out, "n-b") || !strings.Contains(out, "MEMBER") {
		t.Fatalf("edgeshard status on a: %v\n%s", err, out)
	}
	iv := checkNoOverlap(t, hosts, shard)
	if len(iv) < 2 || iv[0].Node != "n-a" || iv[len(iv)-1].Node != "n-b" {
		t.Fatalf("ownership of %s: %+v, want a then b", shard, iv)
	}
}

// TestClusterLeftoverFlush: a buffer left on a host that no longer owns
// its shard is flushed by that host, exactly once, whoever owns the
// shard. PAGEVIEWS is sharded here: A owns shard S; A dies (kill -9) and B
// takes S over with fresh storage, counts 3 views and dies too before its
// flush; A comes back and owns S again; when B comes back its overdue
// flush runs as a leftover flush (under a claim of its own, fenced apart)
// and SQL gets B's 3 views — without it they would wait on B's disk until
// the placement gave S back to B. Ownership intervals of S never overlap.
func TestClusterLeftoverFlush(t *testing.T) {
	hosts := startPOPShards(t, 2, "n-a", "n-b")
	a, b := hosts[0], hosts[1]
	s := "0"
	if cluster.Owner("PAGEVIEWS", s, []string{"n-a", "n-b"}) != "n-a" {
		s = "1"
	}
	key := "k"
	for i := 0; strconv.FormatUint(uint64(host.HashToShard(key)%2), 10) != s; i++ {
		key = fmt.Sprintf("k%d", i)
	}
	a.Kill()
	waitUntil(t, 15*time.Second, "b sees a gone", func() bool { return len(b.status(t).Members) == 1 })
	for i := 1; i <= 3; i++ {
		if code, views, _ := view(t, b, key); code != 200 || views != int64(i) {
			t.Fatalf("view %d on b: %d views=%d (want a fresh shard on b)", i, code, views)
		}
	}
	b.Kill() // before its 2 s flush
	a.Restart()
	waitUntil(t, 15*time.Second, "a a member again", func() bool { return len(a.status(t).Members) == 1 })
	b.Restart()
	db, err := sql.Open("pgx", dbURLOf(t, a))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var views int64
	waitUntil(t, 20*time.Second, "b's leftover views in SQL", func() bool {
		err := db.QueryRowContext(context.Background(), "SELECT views FROM page_views WHERE page = $1", s).Scan(&views)
		return err == nil && views == 3
	})
	if !strings.Contains(b.Output(), "leftover flush of a shard owned elsewhere") {
		t.Fatalf("b never ran a leftover flush:\n%s", b.Output())
	}
	checkNoOverlap(t, hosts, "PAGEVIEWS/"+s)
}

// problems returns the warning and error lines of a host's log.
func problems(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// dbURLOf reads the PostgreSQL URL from h's config.
func dbURLOf(t *testing.T, h *popHost) string {
	t.Helper()
	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`url = "(postgres[^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no postgres url in the config")
	}
	return string(m[1])
}

// TestClusterLeaveShipsObjects: a host that leaves (SIGTERM) moves the
// per-name objects it runs to the next host with their storage — queue
// finished, flushed, shipped, then the ownership handed over — while a
// client keeps counting views through the other host: not one request
// fails, and the count goes on from where it was. The ownership intervals
// never overlap.
func TestClusterLeaveShipsObjects(t *testing.T) {
	hosts := startPOP(t, "n-a", "n-b")
	a, b := hosts[0], hosts[1]
	page := pageOn("leave", "n-a", "n-b")
	var want int64
	for range 5 {
		want++
		if code, views, _ := view(t, b, page); code != 200 || views != want {
			t.Fatalf("view %d: %d views=%d", want, code, views)
		}
	}
	stopped := make(chan error, 1)
	go func() { stopped <- a.Term(60 * time.Second) }()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		want++
		if code, views, _ := view(t, b, page); code != 200 || views != want {
			t.Fatalf("view %d while a leaves: %d views=%d (want every request served, the count carried over)\na:\n%s\nb:\n%s", want, code, views,
				problems(a.Output()), problems(b.Output()))
		}
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(a.Output(), "shard shipped to its next owner") {
		t.Fatalf("a did not ship the page:\n%s", a.Output())
	}
	want++
	if code, views, _ := view(t, b, page); code != 200 || views != want {
		t.Fatalf("view after a left: %d views=%d, want %d", code, views, want)
	}
	iv := checkNoOverlap(t, hosts, "PAGEVIEWS/"+page)
	if len(iv) < 2 || iv[0].Node != "n-a" || iv[len(iv)-1].Node != "n-b" {
		t.Fatalf("ownership: %+v, want a then b", iv)
	}
}

// TestClusterCrashLoop: three hosts, clients counting views of a dozen
// pages (per-name objects) through random live hosts, while hosts are
// killed (kill -9, restarted), frozen past their lease (SIGSTOP, then
// SIGCONT) or stopped (SIGTERM: their live pages shipped) and restarted,
// at random. At the end every acknowledged view is counted (a page's
// count is at least its acknowledged views, at most those plus the ones
// whose outcome the client never learned), no view number was ever
// acknowledged twice for a page (two live instances would hand out the
// same number), and no two hosts' ownership intervals of a page overlap.
func TestClusterCrashLoop(t *testing.T) {
	hosts := startPOP(t, "n-a", "n-b", "n-c")
	const pages, clients = 12, 4
	cycles := 6
	if testing.Short() {
		cycles = 3
	}
	type ledger struct {
		mu      sync.Mutex
		acked   map[string]map[int64]bool // page → view numbers acknowledged
		unknown map[string]int
	}
	led := &ledger{acked: map[string]map[int64]bool{}, unknown: map[string]int{}}
	var up [3]atomic.Bool
	for i := range up {
		up[i].Store(true)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(c), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				h := rng.IntN(len(hosts))
				if !up[h].Load() {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				page := fmt.Sprintf("p%d", rng.IntN(pages))
				resp, err := client.Post(hosts[h].URL()+"/do/PAGEVIEWS/"+page+"/view", "text/plain", nil)
				var r struct{ Views int64 }
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					ok = ok && json.NewDecoder(resp.Body).Decode(&r) == nil
					resp.Body.Close()
				}
				led.mu.Lock()
				switch {
				case ok && led.acked[page][r.Views]:
					t.Errorf("page %s: view number %d acknowledged twice (two live instances?)", page, r.Views)
				case ok:
					if led.acked[page] == nil {
						led.acked[page] = map[int64]bool{}
					}
					led.acked[page][r.Views] = true
				default:
					led.unknown[page]++
				}
				led.mu.Unlock()
			}
		}()
	}
	rng := mrand.New(mrand.NewPCG(42, 7))
	for c := 0; c < cycles; c++ {
		time.Sleep(time.Second)
		v := rng.IntN(len(hosts))
		h := hosts[v]
		switch c % 3 {
		case 0:
			up[v].Store(false)
			h.Kill()
			time.Sleep(500 * time.Millisecond)
			h.Restart()
			t.Logf("cycle %d: kill -9 %s, restarted", c+1, h.node)
		case 1:
			up[v].Store(false)
			h.Signal(syscall.SIGSTOP)
			time.Sleep(3500 * time.Millisecond) // past its 2 s lease
			h.Signal(syscall.SIGCONT)
			t.Logf("cycle %d: SIGSTOP %s past its lease, SIGCONT", c+1, h.node)
		case 2:
			up[v].Store(false)
			if err := h.Term(30 * time.Second); err != nil {
				t.Fatal(err)
			}
			h.Restart()
			t.Logf("cycle %d: SIGTERM %s (its pages shipped), restarted", c+1, h.node)
		}
		up[v].Store(true)
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	waitUntil(t, 20*time.Second, "three members", func() bool { return len(hosts[0].status(t).Members) == 3 })

	total := 0
	for i := range pages {
		page := fmt.Sprintf("p%d", i)
		var got int64
		waitUntil(t, 20*time.Second, "page "+page+" served", func() bool {
			resp, err := http.Get(hosts[i%3].URL() + "/do/PAGEVIEWS/" + page + "/")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var r struct{ Views int64 }
			return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&r) == nil && func() bool { got = r.Views; return true }()
		})
		led.mu.Lock()
		acked, unknown := len(led.acked[page]), led.unknown[page]
		for n := range led.acked[page] {
			if n > got {
				t.Errorf("page %s: view %d was acknowledged, the page counts %d (lost)", page, n, got)
			}
		}
		led.mu.Unlock()
		total += acked
		if got < int64(acked) || got > int64(acked+unknown) {
			t.Errorf("page %s: counts %d, acknowledged %d, unknown %d", page, got, acked, unknown)
		}
		checkNoOverlap(t, hosts, "PAGEVIEWS/"+page)
	}
	if total < 100 {
		t.Errorf("only %d views acknowledged: the load hardly ran", total)
	}
	t.Logf("%d views acknowledged over %d pages; lost=0 duplicated=0", total, pages)
}

// rateLimitBinding is a sharded rate-limit namespace (the edge API's
// plugin) of 4 shards, RL, for a POP's config.
func rateLimitBinding(t *testing.T) string {
	return fmt.Sprintf(`
[[durable_objects.bindings]]
name = "RL"
module = %q
shards = 4
`, testutil.Plugin(t, "plugins/ratelimit"))
}

// keyOn returns a key of a namespace of shards shards whose shard the
// placement gives to node among nodes, avoiding the shards in not.
func keyOn(binding string, shards int, node string, nodes []string, not ...string) (key, shard string) {
	for i := 0; ; i++ {
		key = fmt.Sprintf("k%d", i)
		shard = strconv.FormatUint(uint64(host.HashToShard(key)%uint32(shards)), 10)
		if cluster.Owner(binding, shard, nodes) == node && !slices.Contains(not, shard) {
			return key, shard
		}
	}
}

// check counts one request in bucket "b" (3 a minute) of the RL shard of
// key through h: whether it was allowed, and what remains.
func check(t *testing.T, h *popHost, key string) (bool, int64) {
	t.Helper()
	resp, err := http.Post(h.URL()+"/do/RL/"+key+"/check", "text/plain", strings.NewReader("b\t3\t60000\n"))
	if err != nil {
		t.Fatalf("check %s on %s: %v", key, h.node, err)
	}
	defer resp.Body.Close()
	var r struct {
		Allowed bool
		Buckets []struct{ Remaining int64 }
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 || len(r.Buckets) != 1 {
		t.Fatalf("check %s on %s: %d %v %+v", key, h.node, resp.StatusCode, err, r)
	}
	return r.Allowed, r.Buckets[0].Remaining
}

// TestClusterDrainMovesEverything: `edgeshard drain` on a host of a POP
// leaves the POP, moving every shard off it, not only the running ones:
// per-name objects homed on it whose actor was evicted for idleness are
// shipped (storage and alarm) as well as the one running, and so are the
// sharded rate-limit shards it keeps, running or idle — a bucket spent on
// it stays spent on the next owner (its window moved). The host stays up
// and forwards; through either host every count goes on where it was,
// before and after it stops. Ownership intervals never overlap.
func TestClusterDrainMovesEverything(t *testing.T) {
	nodes := []string{"n-a", "n-b"}
	hosts := startPOPWith(t, popOptions{top: `idle_timeout = "1s"`, bindings: rateLimitBinding(t)}, nodes...)
	a, b := hosts[0], hosts[1]
	live := pageOn("live", "n-a", "n-b")
	var idle []string
	for i := 0; len(idle) < 5; i++ {
		if p := pageOn(fmt.Sprintf("idle%d", i), "n-a", "n-b"); !slices.Contains(idle, p) && p != live {
			idle = append(idle, p)
		}
	}
	for _, p := range append([]string{live}, idle...) {
		for i := int64(1); i <= 3; i++ {
			if code, views, _ := view(t, b, p); code != 200 || views != i {
				t.Fatalf("view %d of %s: %d views=%d", i, p, code, views)
			}
		}
	}
	busyKey, busyShard := keyOn("RL", 4, "n-a", nodes)
	idleKey, idleShard := keyOn("RL", 4, "n-a", nodes, busyShard)
	for _, k := range []string{busyKey, idleKey} {
		for i := int64(2); i >= 0; i-- {
			if ok, left := check(t, b, k); !ok || left != i {
				t.Fatalf("check of %s: allowed=%v remaining=%d, want allowed with %d left", k, ok, left, i)
			}
		}
	}
	// Idle: the pages' actors evicted, their claims released; the rate-
	// limit shards' claims stay with a (without actors).
	waitUntil(t, 20*time.Second, "a's actors evicted for idleness", func() bool {
		for _, c := range a.status(t).Owned {
			if strings.HasPrefix(c.Shard, "PAGEVIEWS/") {
				return false
			}
		}
		return true
	})
	// The live page and the busy bucket run again on a.
	if code, views, _ := view(t, b, live); code != 200 || views != 4 {
		t.Fatalf("view 4 of %s: %d views=%d", live, code, views)
	}
	if ok, left := check(t, a, busyKey); ok || left != 0 {
		t.Fatalf("check of a spent bucket: allowed=%v remaining=%d", ok, left)
	}

	out, err := a.cli(t, []string{"drain"}, "--wait", "30s", "--json")
	var rep cluster.LeaveReport
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("edgeshard drain on a: %v\n%s\n%s", err, out, problems(a.Output()))
	}
	// 6 pages and 2 rate-limit shards: claimed (moved; the rate-limit
	// shards stay claimed when idle) or idle (shipped): the live page may
	// have gone idle again meanwhile.
	if !rep.Left || rep.Node != "n-a" || rep.Moved+rep.Shipped != 8 || rep.Shipped < 5 || len(rep.Kept) != 0 {
		t.Fatalf("drain report %+v, want n-a left with 8 shards moved or shipped (at least the 5 idle pages), none kept\n%s", rep, a.Output())
	}
	if st := b.status(t); len(st.Members) != 1 || st.Homes["n-a"] != 0 {
		t.Fatalf("b's view after a left: members %v homes %v, want b alone with every object homed elsewhere", st.Members, st.Homes)
	}
	if st := a.status(t); st.Joined || len(st.Owned)+len(st.Moving) != 0 {
		t.Fatalf("a after drain: joined=%v owned %v moving %v", st.Joined, st.Owned, st.Moving)
	}
	// Through a (forwarding) and b: every count where it was.
	for i, h := range []*popHost{a, b} {
		if code, views, _ := view(t, h, live); code != 200 || views != int64(5+i) {
			t.Fatalf("view of %s through %s after the drain: %d views=%d, want %d", live, h.node, code, views, 5+i)
		}
		for _, p := range idle {
			if code, views, _ := view(t, h, p); code != 200 || views != int64(4+i) {
				t.Fatalf("view of idle page %s through %s after the drain: %d views=%d, want %d", p, h.node, code, views, 4+i)
			}
		}
		for _, k := range []string{busyKey, idleKey} {
			if ok, left := check(t, h, k); ok || left != 0 {
				t.Fatalf("check of %s through %s after the drain: allowed=%v remaining=%d: the bucket's window did not move", k, h.node, ok, left)
			}
		}
	}
	if err := a.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if code, views, _ := view(t, b, idle[0]); code != 200 || views != 6 {
		t.Fatalf("view of %s with a stopped: %d views=%d, want 6", idle[0], code, views)
	}
	for _, p := range append([]string{live}, idle...) {
		checkNoOverlap(t, hosts, "PAGEVIEWS/"+p)
	}
	checkNoOverlap(t, hosts, "RL/"+busyShard)
	checkNoOverlap(t, hosts, "RL/"+idleShard)
}

// TestClusterRollingRestart: three hosts under steady load — clients
// counting views of per-name pages (PAGEVIEWS) and of the shards of a
// sharded namespace (SITES, 6 shards), each page or shard counted by one
// client in turn, through the hosts in rotation; a few pages and shards
// only every 3 s, so that their actors are mostly evicted for idleness
// (idle_timeout 1s) and a host leaving ships them idle — while every host is
// restarted in turn as a rolling deploy does it: taken out of rotation
// (the clients stop sending to it, as a load balancer would), stopped
// with SIGTERM (it leaves the POP: its shards flushed and shipped),
// started again on the same data and node id, put back in rotation once
// every host sees it a member (the placement gives it sharded shards
// back: they move to it with their storage). Every response is 200, every
// count goes on by exactly one (no view lost, none counted twice, no
// sharded shard starting afresh), and no two hosts' ownership intervals
// of a page or shard overlap.
func TestClusterRollingRestart(t *testing.T) {
	nodes := []string{"n-a", "n-b", "n-c"}
	sites := fmt.Sprintf(`
[[durable_objects.bindings]]
name = "SITES"
module = %q
shards = 6
sql = "DB"
analytics = "AE"
`, testutil.Plugin(t, "examples/tutorial"))
	hosts := startPOPWith(t, popOptions{top: `idle_timeout = "1s"`, bindings: sites}, nodes...)

	type target struct {
		binding, key, shard string
		pause               time.Duration // between two views
		last                int64
		served              atomic.Int64
	}
	const hot, cold = 20 * time.Millisecond, 3 * time.Second
	var targets []*target
	for i := range 12 {
		p, pause := fmt.Sprintf("r%d", i), hot
		if i >= 9 {
			pause = cold
		}
		targets = append(targets, &target{binding: "PAGEVIEWS", key: p, shard: "PAGEVIEWS/" + p, pause: pause})
	}
	for s := range 6 {
		key, pause := "s", hot
		for i := 0; host.HashToShard(key)%6 != uint32(s); i++ {
			key = fmt.Sprintf("s%d", i)
		}
		if s >= 4 {
			pause = cold
		}
		targets = append(targets, &target{binding: "SITES", key: key, shard: "SITES/" + strconv.Itoa(s), pause: pause})
	}

	var inRotation, inflight [3]atomic.Int64
	for i := range inRotation {
		inRotation[i].Store(1)
	}
	var acked atomic.Int64
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	client := &http.Client{Timeout: 30 * time.Second}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for n, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next := n; ; next++ {
				select {
				case <-stop:
					return
				case <-time.After(tg.pause): // steady load, not a flood
				}
				i := next % len(hosts)
				inflight[i].Add(1) // before the rotation check: a host taken out waits for it
				if inRotation[i].Load() == 0 {
					inflight[i].Add(-1)
					continue
				}
				h := hosts[i]
				t0 := time.Now()
				resp, err := client.Post(h.URL()+"/do/"+tg.binding+"/"+tg.key+"/view", "text/plain", nil)
				if err != nil {
					inflight[i].Add(-1)
					fail("%s through %s: %v", tg.shard, h.node, err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				inflight[i].Add(-1)
				var r struct{ Views int64 }
				if resp.StatusCode != 200 || json.Unmarshal(body, &r) != nil {
					fail("%s through %s after %v: %d %s", tg.shard, h.node, time.Since(t0).Round(time.Millisecond), resp.StatusCode, body)
					continue
				}
				if r.Views != tg.last+1 {
					fail("%s through %s: views %d after %d (want every view counted once)", tg.shard, h.node, r.Views, tg.last)
				}
				tg.last = r.Views
				tg.served.Add(1)
				acked.Add(1)
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}()
	member := func(node string) bool {
		for _, o := range hosts {
			found := false
			for _, m := range o.status(t).Members {
				found = found || m.Node == node
			}
			if !found {
				return false
			}
		}
		return true
	}
	waitUntil(t, 30*time.Second, "the load running", func() bool { return acked.Load() >= 100 })
	for i, h := range hosts {
		t0 := time.Now()
		inRotation[i].Store(0)
		waitUntil(t, 30*time.Second, "no request in flight to "+h.node, func() bool { return inflight[i].Load() == 0 })
		if err := h.Term(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		stopped := time.Since(t0)
		h.restart()
		waitUntil(t, 30*time.Second, h.node+" a member again for every host", func() bool { return member(h.node) })
		inRotation[i].Store(1)
		t.Logf("%s: stopped in %v, back in rotation after %v", h.node, stopped.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		before := make([]int64, len(targets))
		for j, tg := range targets {
			before[j] = tg.served.Load()
		}
		waitUntil(t, 30*time.Second, "every page and shard served again with "+h.node+" back", func() bool {
			for j, tg := range targets {
				if tg.served.Load() < before[j]+2 {
					return false
				}
			}
			return true
		})
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for i, f := range failures {
		if i == 10 {
			t.Errorf("... and %d more", len(failures)-10)
			break
		}
		t.Errorf("failed: %s", f)
	}
	moved := map[string]int{} // binding → pages or shards that changed hosts
	for _, tg := range targets {
		if tg.last < 6 || (tg.pause == hot && tg.last < 50) {
			t.Errorf("%s: only %d views counted: the load hardly ran", tg.shard, tg.last)
		}
		owners := map[string]bool{}
		for _, o := range checkNoOverlap(t, hosts, tg.shard) {
			owners[o.Node] = true
		}
		if len(owners) > 1 {
			moved[tg.binding]++
		}
	}
	if moved["PAGEVIEWS"] == 0 || moved["SITES"] == 0 {
		t.Errorf("pages and shards that changed hosts: %v; want some of each", moved)
	}
	for _, h := range hosts {
		if !strings.Contains(h.log(), `"message":"shard shipped to its next owner"`) {
			t.Errorf("%s shipped no shard", h.node)
		}
	}

	lapses := 0
	for _, h := range hosts {
		lapses += strings.Count(h.log(), "lease lapsed")
	}
	t.Logf("%d views counted over %d pages and shards through 3 rolling restarts (moved: %v); %d failed; %d lease lapse(s)",
		acked.Load(), len(targets), moved, len(failures), lapses)
	if len(failures) > 0 {
		for _, h := range hosts {
			t.Logf("%s problems:\n%s", h.node, problems(h.log()))
		}
	}
}

// TestClusterJoinMovesIdleShards: when a host joins, the shards the
// placement now gives it move to it with their storage even if no actor
// runs them on their old owner: a sharded namespace's shard stays claimed
// by its host while idle, so the move ships it. Here b is stopped, a
// spends a rate-limit bucket of a shard that is b's when b is up, the
// shard goes idle on a, b comes back: through either host the bucket is
// still spent, and b runs the shard.
func TestClusterJoinMovesIdleShards(t *testing.T) {
	nodes := []string{"n-a", "n-b"}
	hosts := startPOPWith(t, popOptions{top: `idle_timeout = "500ms"`, bindings: rateLimitBinding(t)}, nodes...)
	a, b := hosts[0], hosts[1]
	key, shard := keyOn("RL", 4, "n-b", nodes)
	if err := b.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "a alone", func() bool { return len(a.status(t).Members) == 1 })
	for i := int64(2); i >= 0; i-- {
		if ok, left := check(t, a, key); !ok || left != i {
			t.Fatalf("check on a: allowed=%v remaining=%d, want %d left", ok, left, i)
		}
	}
	waitUntil(t, 10*time.Second, "the shard's actor evicted on a, its claim kept", func() bool {
		var bi struct {
			ActiveShards int `json:"active_shards"`
		}
		a.adminCall(t, http.MethodGet, "/admin/bindings/RL", &bi)
		return bi.ActiveShards == 0 && len(a.status(t).Owned) == 1
	})
	b.restart()
	waitUntil(t, 15*time.Second, "b a member again", func() bool { return len(a.status(t).Members) == 2 })
	waitUntil(t, 15*time.Second, "the shard moved to b", func() bool { return len(a.status(t).Owned) == 0 })
	for _, h := range []*popHost{b, a} {
		if ok, left := check(t, h, key); ok || left != 0 {
			t.Fatalf("check through %s after b joined: allowed=%v remaining=%d: the bucket's window did not move with the idle shard", h.node, ok, left)
		}
	}
	iv := checkNoOverlap(t, hosts, "RL/"+shard)
	if len(iv) < 2 || iv[len(iv)-1].Node != "n-b" {
		t.Fatalf("ownership of RL/%s: %+v, want b last", shard, iv)
	}
}
