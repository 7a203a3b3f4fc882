package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/proctest"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestRealDiskFull fills a real (tmpfs) filesystem under the shards'
// storage while clients post runtime events, then grows the filesystem,
// restarts the host and checks that every acknowledged event reached SQL
// once. It documents what a full disk does: Badger writes its value log
// through a memory mapping, so the write faults (SIGBUS) and the process
// dies — a crash, after which the acknowledged (fsynced) writes are intact.
//
// It mounts a tmpfs, so it needs root and runs only with
// EDGESHARD_TMPFS=1; the ENOSPC error path runs in every `make test`
// (host: TestStorageWriteFailureFailsHeldResponsesAndLeavesNoPartialState).
func TestRealDiskFull(t *testing.T) {
	if os.Getenv("EDGESHARD_TMPFS") != "1" || testing.Short() {
		t.Skip("set EDGESHARD_TMPFS=1 (as root) to mount a tmpfs and fill it")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	fs := filepath.Join(dir, "fs")
	if err := os.MkdirAll(fs, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", fs).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", fs).Run() })

	bin := proctest.Binary(t)
	events := testutil.Plugin(t, "plugins/runtimeevents")
	counters := testutil.Plugin(t, "plugins/counters")
	// Shard storage on the small filesystem; SQL, analytics and the
	// compilation cache elsewhere.
	config := func(addr, admin string) string {
		return fmt.Sprintf(`listen = %q
admin_listen = %q
data_dir = %q
cache_dir = %q
event_timeout = "5s"

[[durable_objects.bindings]]
name = "RUNTIME_EVENT_SHARD"
module = %q
shards = 4
sql = "DB"
analytics = "AE"

[[durable_objects.bindings]]
name = "COUNTER_SHARD"
module = %q
shards = 4
sql = "DB"

[[d1_databases]]
binding = "DB"
url = %q

[[analytics_engine_datasets]]
binding = "AE"
dataset = "runtime_events"
url = %q

[auth]
trust_user_header = "X-User-Id"

[reconcile]
interval = "0s"
`, addr, admin, fs, testutil.CacheDir(), events, counters,
			"sqlite://"+filepath.Join(dir, "sql", "d1.db"), "sqlite://"+filepath.Join(dir, "sql", "analytics.db"))
	}
	srv, err := newServer(bin, dir, nil, config, randomToken())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := srv.start(ctx); err != nil {
		t.Fatal(err)
	}

	// Events with 12 KiB payloads: each buffered one lands in Badger's
	// value log; flushed ones are deleted, but the log's space comes back
	// only after its garbage collection, so the filesystem fills.
	led := newLedger()
	g := newGate()
	g.open()
	ld := &load{cfg: loadConfig{base: srv.url(), clients: 8}, led: led, gate: g}
	ld.client = newClient(8)
	var stop atomic.Bool
	var wg sync.WaitGroup
	pad := strings.Repeat("x", 12<<10)
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("%08x-0000-4000-8000-%012x", c, i)
				body := fmt.Sprintf(`{"events":[{"id":%q,"type":"crash.fill","capsule_id":"cap-%d","payload":{"pad":%q}}]}`, id, i%16, pad)
				o, _, _ := ld.do("POST", "/runtime-events", "filler", []byte(body))
				led.event(id, o)
				if o != acked {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	died := false
	select {
	case <-srv.done:
		died = true
	case <-time.After(90 * time.Second):
	}
	stop.Store(true)
	wg.Wait()
	out, _ := os.ReadFile(srv.log.Name())
	switch {
	case died && strings.Contains(string(out), "SIGBUS"):
		t.Logf("the full disk crashed the host with SIGBUS (exit %v), as documented", srv.cmd.ProcessState)
	case died:
		t.Logf("the host died on the full disk: exit %v", srv.cmd.ProcessState)
	default:
		t.Logf("the host survived 90 s on the full disk (writes failing over to SQL); stopping it")
		srv.kill()
	}
	df, _ := exec.Command("df", "-h", fs).CombinedOutput()
	t.Logf("filesystem: %s", strings.TrimSpace(string(df)))

	if out, err := exec.Command("mount", "-o", "remount,size=512m", fs).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v %s", err, out)
	}
	if err := srv.start(ctx); err != nil {
		t.Fatalf("restart after the disk was grown: %v", err)
	}
	if err := waitDrained(ctx, srv, 4, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := srv.term(time.Minute); err != nil {
		t.Fatal(err)
	}
	snap, err := readSnapshot(ctx, filepath.Join(dir, "sql"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range compare(led, snap) {
		if s.Name != "events" {
			continue
		}
		t.Log(s.String())
		if !s.ok() {
			t.Fatalf("%s\n%s", s, strings.Join(s.Detail, "\n"))
		}
		if s.Acknowledged == 0 {
			t.Fatal("no event was acknowledged")
		}
	}
}
