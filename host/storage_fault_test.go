package host_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
)

// httpDo sends one request to the host's /do routes and returns status and body.
func httpDo(t *testing.T, srv *httptest.Server, method, path string) (int, string) {
	t.Helper()
	return testutil.Do(t, method, srv.URL+path, "")
}

// TestStorageFullRefusesWritesServesReads: with less free space than the
// reserve (here a reserve larger than any disk) every write answers
// 507 storage_full and nothing of it is visible; reads go on. (The real
// thing, filling a filesystem: cmd/edgeshard-crashtest: TestRealDiskFull.)
func TestStorageFullRefusesWritesServesReads(t *testing.T) {
	f := start(t, counterConfig(t, func(c *host.Config) { c.Badger.MinFreeBytes = 1 << 60 }))
	srv := f.serve(t)
	for range 3 {
		status, body := httpDo(t, srv, "POST", "/do/COUNTER/a/increment")
		if status != http.StatusInsufficientStorage || !strings.Contains(body, `"storage_full"`) || !strings.Contains(body, "below the reserve") {
			t.Fatalf("increment on a full disk = %d %s; want 507 storage_full", status, body)
		}
	}
	if status, body := httpDo(t, srv, "GET", "/do/COUNTER/a/"); status != 200 || !strings.Contains(body, `"count":0`) {
		t.Fatalf("read on a full disk = %d %s; want 200 with count 0", status, body)
	}
	_, err := f.call(t, "a", "POST", "/increment")
	if !errors.Is(err, storage.ErrStorageFull) || !errors.Is(err, host.ErrCommit) {
		t.Fatalf("Fetch on a full disk = %v; want ErrStorageFull (and ErrCommit)", err)
	}
	if !strings.Contains(f.logs.String(), "refusing writes") {
		t.Errorf("the refusal is not logged:\n%s", f.logs.String())
	}
}

// TestDataDirRemovedUnderRunningHost: with the data directory removed under
// a running host, Badger would retry its memtable flush every second
// forever and Close would never return. Writes answer 503
// storage_unavailable at once, reads go on, Close returns within seconds
// with an error naming what was stuck, and Badger's own error is in the
// host's log.
func TestDataDirRemovedUnderRunningHost(t *testing.T) {
	cfg := counterConfig(t, nil)
	before := goleak.IgnoreCurrent()
	f := start(t, cfg)
	srv := f.serve(t)
	for range 2 {
		if status, body := httpDo(t, srv, "POST", "/do/COUNTER/a/increment"); status != 200 {
			t.Fatalf("increment = %d %s", status, body)
		}
	}

	if err := os.RemoveAll(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	status, body := httpDo(t, srv, "POST", "/do/COUNTER/a/increment")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"storage_unavailable"`) || !strings.Contains(body, "removed") {
		t.Fatalf("increment with the data dir removed = %d %s; want 503 storage_unavailable", status, body)
	}
	if status, body := httpDo(t, srv, "GET", "/do/COUNTER/a/"); status != 200 || !strings.Contains(body, `"count":2`) {
		t.Fatalf("read with the data dir removed = %d %s; want 200 with count 2", status, body)
	}

	t0 := time.Now()
	err := f.h.Close(context.Background())
	took := time.Since(t0)
	t.Logf("Close took %s: %v", took.Round(time.Millisecond), err)
	if err == nil || took > 10*time.Second {
		t.Fatalf("Close = %v after %s; want an error within 10s", err, took)
	}
	for _, want := range []string{"close storage", "gave up", "flushing its memtable", "no such file or directory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Close error lacks %q", want)
		}
	}
	logs := f.logs.String()
	if !strings.Contains(logs, `"component":"badger"`) || !strings.Contains(logs, "error flushing memtable") {
		t.Errorf("Badger's error is not in the host's log:\n%s", logs)
	}

	// Badger's flush goroutine still retries; with the directory back it
	// succeeds and Badger finishes closing, so the test leaves nothing
	// behind.
	srv.Close()
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "shards"), 0o755); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := goleak.Find(before)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Badger did not finish closing once the directory was back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
