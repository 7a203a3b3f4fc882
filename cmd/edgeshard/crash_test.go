package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/proctest"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// counterConfigText is the config of a process serving examples/counter,
// built with main.version=version, as COUNTER; settings are more top-level
// lines (`event_timeout = "2s"`).
func counterConfigText(t *testing.T, version string, settings ...string) string {
	return fmt.Sprintf(`listen = "{{LISTEN}}"
data_dir = "./data"
cache_dir = %q
%s
[[durable_objects.bindings]]
name = "COUNTER"
module = %q
shards = 0
`, testutil.CacheDir(), strings.Join(append(settings, ""), "\n"), testutil.Plugin(t, "examples/counter", "-X main.version="+version))
}

func post(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func countOf(t *testing.T, url string) int {
	t.Helper()
	st, b := testutil.Do(t, "GET", url, "")
	var r testutil.CounterReply
	if st != 200 || json.Unmarshal([]byte(b), &r) != nil {
		t.Fatalf("GET %s: %d %s", url, st, b)
	}
	return r.Count
}

// armAlarmReset makes the counter's shard "alarm" count 1 and sets its
// alarm to reset the count after ms.
func armAlarmReset(t *testing.T, p *proctest.Proc, ms int) {
	t.Helper()
	if st, body := post(t, p.URL()+"/do/COUNTER/alarm/increment"); st != 200 {
		t.Fatalf("increment: %d %s", st, body)
	}
	if st, body := post(t, p.URL()+"/do/COUNTER/alarm/reset-after?ms="+strconv.Itoa(ms)); st != 200 {
		t.Fatalf("reset-after: %d %s", st, body)
	}
}

// waitAlarmReset waits until armAlarmReset's alarm has reset the count,
// failing with what and the process's log after timeout.
func waitAlarmReset(t *testing.T, p *proctest.Proc, timeout time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for countOf(t, p.URL()+"/do/COUNTER/alarm/") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s:\n%s", what, p.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKill9KeepsAcknowledgedWritesAndAlarms is issue 2's check on the real
// binary: 200 concurrent increments, kill -9, restart: still 200; an alarm
// set for 2 s, kill -9 at once, restart: it still resets the count.
func TestKill9KeepsAcknowledgedWritesAndAlarms(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dir := t.TempDir()
	p := proctest.Start(t, dir, counterConfigText(t, "e2e", `event_timeout = "2s"`))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i := 0; i < 200; i++ {
		wg.Go(func() {
			if st, body := post(t, p.URL()+"/do/COUNTER/c200/increment"); st != 200 {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%d %s", st, body))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d increments failed, first: %s", len(failures), failures[0])
	}
	if got := countOf(t, p.URL()+"/do/COUNTER/c200/"); got != 200 {
		t.Fatalf("count = %d, want 200", got)
	}
	armAlarmReset(t, p, 2000)
	p.Kill()
	p.Restart()
	if got := countOf(t, p.URL()+"/do/COUNTER/c200/"); got != 200 {
		t.Fatalf("after kill -9 count = %d, want 200", got)
	}
	if got := countOf(t, p.URL()+"/do/COUNTER/alarm/"); got != 1 {
		t.Fatalf("alarm fired too early: count = %d", got)
	}
	waitAlarmReset(t, p, 10*time.Second, "alarm did not reset the count after restart")
}

// TestMisbehavingShardsAnswer5xx: spin and panic answer 5xx while other
// shards keep serving.
func TestMisbehavingShardsAnswer5xx(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	p := proctest.Start(t, t.TempDir(), counterConfigText(t, "e2e", `event_timeout = "2s"`))
	type res struct {
		st   int
		body string
	}
	spin := make(chan res, 1)
	go func() { st, b := post(t, p.URL()+"/do/COUNTER/spinner/spin"); spin <- res{st, b} }()
	for i := 0; i < 10; i++ {
		if st, body := post(t, p.URL()+"/do/COUNTER/healthy/increment"); st != 200 {
			t.Fatalf("healthy shard failed while another spins: %d %s", st, body)
		}
	}
	if st, body := post(t, p.URL()+"/do/COUNTER/crasher/panic"); st < 500 || !strings.Contains(body, "shard_crashed") {
		t.Fatalf("panic: %d %s", st, body)
	}
	r := <-spin
	if r.st < 500 || !strings.Contains(r.body, "shard_timeout") {
		t.Fatalf("spin: %d %s", r.st, r.body)
	}
	if got := countOf(t, p.URL()+"/do/COUNTER/healthy/"); got != 10 {
		t.Fatalf("healthy count = %d", got)
	}
	if !strings.Contains(p.Output(), "panic requested by /panic") {
		t.Fatalf("guest panic message missing from the host log:\n%s", p.Output())
	}
}
