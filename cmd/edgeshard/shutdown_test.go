package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/edgeshard/edgeshard/internal/proctest"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

const adminToken = "process-test-token"

// adminConfigText is the counter config with the admin API on adminAddr.
func adminConfigText(t *testing.T, adminAddr string) string {
	return counterConfigText(t, "v1", fmt.Sprintf("admin_listen = %q", adminAddr))
}

// TestSIGTERMUnderLoadLosesNoAcknowledgedIncrement: clients increment
// counters from several goroutines; SIGTERM arrives mid-load. The process
// exits cleanly, and after a restart every counter equals the increments
// that were acknowledged; an alarm set before the restart still fires.
func TestSIGTERMUnderLoadLosesNoAcknowledgedIncrement(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	p := proctest.Start(t, t.TempDir(), adminConfigText(t, proctest.FreeAddr(t)), "EDGESHARD_ADMIN_TOKEN="+adminToken)
	armAlarmReset(t, p, 4000)

	names := []string{"n0", "n1", "n2", "n3", "n4"}
	var acked [5]atomic.Int64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	run := loadgen.Start(context.Background(), loadgen.Options{Workers: 8, Interval: time.Millisecond}, func(ctx context.Context, w, i int) error {
		k := (w + i) % len(names)
		if _, err := testutil.Increment(ctx, client, p.URL()+"/do/COUNTER/"+names[k]); err != nil {
			return err
		}
		acked[k].Add(1)
		return nil
	})
	time.Sleep(time.Second)
	termAt := run.Elapsed()
	if err := p.Term(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	res := run.Stop()
	// Requests in flight at SIGTERM may be refused (the listener is closed,
	// or 503 shutting_down); those are not acknowledged and must not count.
	steady := res.Window(0, termAt-200*time.Millisecond)
	t.Logf("steady load: %v; around and after SIGTERM: %v", steady, res.Window(termAt-200*time.Millisecond, time.Hour))
	if steady.Requests == 0 || steady.Errors > 0 {
		t.Fatalf("load before SIGTERM: %v", steady)
	}
	inFlight := 0
	for _, s := range res.Samples {
		if s.Err == nil && s.Start < termAt && s.Start+s.Latency > termAt {
			inFlight++
		}
	}
	t.Logf("%d requests in flight at SIGTERM were drained and acknowledged", inFlight)
	if errs := res.Errors(); len(errs) > 0 {
		t.Logf("first refused request: %v", errs[0].Err)
	}
	out := p.Output()
	for _, want := range []string{"shutting down", "edgeshard stopped cleanly", "admin API listening"} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %q:\n%s", want, out)
		}
	}

	p.Restart()
	var total int64
	for i, k := range names {
		got := countOf(t, p.URL()+"/do/COUNTER/"+k+"/")
		if int64(got) != acked[i].Load() {
			t.Errorf("%s: count %d after restart, acknowledged %d", k, got, acked[i].Load())
		}
		total += acked[i].Load()
	}
	t.Logf("%d increments acknowledged, all present after restart", total)
	waitAlarmReset(t, p, 15*time.Second, "the alarm set before SIGTERM did not fire after restart")
}

// TestAdminAPIOnTheBinary: without a token the admin API stays off and says
// so; with one, push/status/rollback work through the CLI against the real
// process, and the admin listener answers 401 without the token.
func TestAdminAPIOnTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	adminAddr := proctest.FreeAddr(t)
	off := proctest.Start(t, t.TempDir(), adminConfigText(t, adminAddr))
	if !strings.Contains(off.Output(), "admin API disabled: set admin_token or EDGESHARD_ADMIN_TOKEN") {
		t.Fatalf("no warning that the admin API is off:\n%s", off.Output())
	}
	if _, err := http.Get("http://" + adminAddr + "/admin/bindings"); err == nil {
		t.Fatal("admin listener open without a token")
	}
	if err := off.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	p := proctest.Start(t, t.TempDir(), adminConfigText(t, adminAddr), "EDGESHARD_ADMIN_TOKEN="+adminToken)
	adminURL := "http://" + adminAddr
	resp, err := http.Get(adminURL + "/admin/bindings")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("admin without token: %d", resp.StatusCode)
	}
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(proctest.Binary(t), args...)
		cmd.Env = append(cmd.Environ(), "EDGESHARD_ADMIN_TOKEN="+adminToken)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	version := func() string {
		resp, err := http.Get(p.URL() + "/do/COUNTER/x/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ Version string }
		json.NewDecoder(resp.Body).Decode(&r)
		return r.Version
	}
	if v := version(); v != "v1" {
		t.Fatalf("version = %q", v)
	}
	if out, err := cli("push", "--admin", adminURL, "--binding", "COUNTER", testutil.Plugin(t, "examples/counter", "-X main.version=v2")); err != nil || !strings.Contains(out, "now serving") {
		t.Fatalf("push: %v\n%s", err, out)
	}
	if v := version(); v != "v2" {
		t.Fatalf("version after push = %q", v)
	}
	out, err := cli("status", "--admin", adminURL)
	if err != nil || !strings.Contains(out, "COUNTER") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	t.Logf("edgeshard status:\n%s", out)
	if out, err := cli("rollback", "--admin", adminURL, "--binding", "COUNTER"); err != nil || !strings.Contains(out, "rolled back") {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	if v := version(); v != "v1" {
		t.Fatalf("version after rollback = %q", v)
	}
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}
