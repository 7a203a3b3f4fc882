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
}

// startPOP starts the hosts of a POP on the shared etcd (a prefix of the
// test's own) and one PostgreSQL database, serving the tutorial's
// pageviews shard (per-name objects that flush their totals to SQL on an
// alarm) as PAGEVIEWS.
func startPOP(t *testing.T, nodes ...string) []*popHost { return startPOPShards(t, 0, nodes...) }

// startPOPShards is startPOP with PAGEVIEWS a sharded namespace of shards
// shards (0: per-name).
func startPOPShards(t *testing.T, shards int, nodes ...string) []*popHost {
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

[[durable_objects.bindings]]
name = "PAGEVIEWS"
module = %q
shards = %d
sql = "DB"
analytics = "AE"

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
`, admin, clusterToken, testutil.CacheDir(), node, mod, shards, db, etcd, prefix)
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

func waitUntil(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
// the hosts' current runs logged; an interval still open ends now). It
// returns the shard's intervals in order.
func checkNoOverlap(t *testing.T, hosts []*popHost, shard string) []ownerlog.Interval {
	t.Helper()
	var ivs []ownerlog.Interval
	for _, h := range hosts {
		ivs = append(ivs, ownerlog.Of(ownerlog.Parse(h.node, h.Output(), time.Now()), shard)...)
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
