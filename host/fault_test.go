package host_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/storage"
)

// faultyBackend wraps a Backend; while err is set, Apply fails with it
// (nothing of the group is applied), as a full or failing disk would.
type faultyBackend struct {
	storage.Backend
	mu      sync.Mutex
	err     error
	refused atomic.Int64 // batches refused
}

func (b *faultyBackend) set(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = err
}

func (b *faultyBackend) Apply(batches []*storage.Batch) error {
	b.mu.Lock()
	err := b.err
	b.mu.Unlock()
	if err != nil {
		b.refused.Add(int64(len(batches)))
		return err
	}
	return b.Backend.Apply(batches)
}

// badgerIn opens Badger in dir (fsync on) behind a faultyBackend.
func badgerIn(t *testing.T, dir string) *faultyBackend {
	t.Helper()
	b, err := storage.OpenBadger(storage.BadgerOptions{Dir: dir, SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	return &faultyBackend{Backend: b}
}

// storedCount and storedAlarm read a counter shard's storage as its next
// event would see it.
func storedState(t *testing.T, f *fixture, shard string) (count string, alarm int64, hasAlarm bool) {
	t.Helper()
	ns, _ := f.h.Namespace("COUNTER")
	var gerr, aerr error
	err := ns.Inspect(context.Background(), shard, func(st host.StorageView) {
		var v []byte
		var ok bool
		v, ok, gerr = st.Get("count")
		if ok {
			count = string(v)
		}
		alarm, hasAlarm, aerr = st.GetAlarm()
	})
	if err = errors.Join(err, gerr, aerr); err != nil {
		t.Fatal(err)
	}
	return count, alarm, hasAlarm
}

// TestStorageWriteFailureFailsHeldResponsesAndLeavesNoPartialState: while
// the disk refuses writes (Badger's Apply fails), every event that wrote
// answers an error wrapping host.ErrCommit (HTTP 500 storage_commit_failed)
// — including the events pipelined behind the failed one, which read its
// lost writes; nothing of them is visible afterwards (count and alarm are
// what the last durable event left, also after a restart); reads and other
// shards keep serving; once the disk is back, writes succeed at once.
func TestStorageWriteFailureFailsHeldResponsesAndLeavesNoPartialState(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"io-error", errors.New("injected: badger write failed")},
		// Disk full: what Badger returns when a write(2) to its value log or
		// WAL fails with ENOSPC. A real full disk is
		// TestDiskFullOnTmpfs (root only).
		{"disk-full", fmt.Errorf("badger: write value log: %w", &os.PathError{Op: "write", Path: "000001.vlog", Err: syscall.ENOSPC})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fb := badgerIn(t, dir)
			cfg := counterConfig(t, func(c *host.Config) { c.Storage = fb })
			f := start(t, cfg)
			srv := f.serve(t)
			for i := 0; i < 5; i++ {
				if _, err := f.call(t, "a", "POST", "/increment"); err != nil {
					t.Fatal(err)
				}
			}
			f.call(t, "b", "POST", "/increment")

			fb.set(tc.err)
			// 20 increments pipelined on shard a, an alarm set on it, and
			// one over HTTP: all are refused.
			var wg sync.WaitGroup
			errs := make(chan error, 21)
			for i := 0; i < 20; i++ {
				wg.Go(func() {
					resp, err := f.call(t, "a", "POST", "/increment")
					if err == nil {
						err = fmt.Errorf("acknowledged while the disk fails: %d %s", resp.Status, resp.Body)
					}
					errs <- err
				})
			}
			wg.Go(func() {
				_, err := f.call(t, "a", "POST", "/reset-after?ms=60000")
				errs <- err
			})
			wg.Wait()
			close(errs)
			for err := range errs {
				if !errors.Is(err, host.ErrCommit) {
					t.Fatalf("error %v, want one wrapping host.ErrCommit", err)
				}
				if st, code := host.ErrorStatus(err); st != 500 || code != "storage_commit_failed" {
					t.Fatalf("maps to %d %s", st, code)
				}
				if tc.name == "disk-full" && !strings.Contains(err.Error(), "no space left on device") {
					t.Fatalf("error %q does not say the disk is full", err)
				}
			}
			resp, err := http.Post(srv.URL+"/do/COUNTER/a/increment", "text/plain", nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 500 || !strings.Contains(string(body), `"storage_commit_failed"`) {
				t.Fatalf("HTTP increment while the disk fails: %d %s", resp.StatusCode, body)
			}
			if fb.refused.Load() == 0 {
				t.Fatal("no write reached the backend")
			}
			// Reads need no commit: they serve the durable state.
			if got := f.count(t, "a"); got != 5 {
				t.Fatalf("count read while the disk fails = %d, want 5 (the lost writes are gone)", got)
			}
			if got := f.count(t, "b"); got != 1 {
				t.Fatalf("other shard = %d, want 1", got)
			}
			if c, _, alarm := storedState(t, f, "a"); c != "5" || alarm {
				t.Fatalf("storage after the failure: count %q, alarm %v; want 5 and none", c, alarm)
			}

			fb.set(nil)
			if resp, err := f.call(t, "a", "POST", "/increment"); err != nil || !strings.Contains(string(resp.Body), `"count":6`) {
				t.Fatalf("first write after the disk is back: %v %s", err, respBody(resp))
			}
			if strings.Count(f.logs.String(), "shard storage commit failed; discarding instance") == 0 {
				t.Fatal("the reset was not logged")
			}
			// A restart on the same directory sees exactly the durable writes.
			if err := f.h.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			cfg.Storage = badgerIn(t, dir)
			f2 := start(t, cfg)
			if got := f2.count(t, "a"); got != 6 {
				t.Fatalf("after restart count = %d, want 6", got)
			}
			if _, _, alarm := storedState(t, f2, "a"); alarm {
				t.Fatal("the alarm of a refused event was persisted")
			}
		})
	}
}

func respBody(r *abi.Response) string {
	if r == nil {
		return ""
	}
	return string(r.Body)
}

// TestStorageFailureDuringAlarmKeepsTheAlarm: an alarm whose writes cannot
// be committed has not run: the shard resets, the alarm stays persisted and
// is retried with the alarm backoff (2 s), so once the disk is back it runs
// and its writes land.
func TestStorageFailureDuringAlarmKeepsTheAlarm(t *testing.T) {
	fb := badgerIn(t, t.TempDir())
	f := start(t, counterConfig(t, func(c *host.Config) { c.Storage = fb }))
	for i := 0; i < 3; i++ {
		f.call(t, "x", "POST", "/increment")
	}
	if _, err := f.call(t, "x", "POST", "/reset-after?ms=300"); err != nil {
		t.Fatal(err)
	}
	fb.set(errors.New("injected: disk gone"))
	time.Sleep(600 * time.Millisecond) // the alarm fires; its reset is refused
	if got := f.count(t, "x"); got != 3 {
		t.Fatalf("count = %d while the disk fails, want 3", got)
	}
	if _, _, ok := storedState(t, f, "x"); !ok {
		t.Fatal("the alarm was dropped although its handler's writes were never durable")
	}
	fb.set(nil)
	waitFor(t, func() bool {
		c, _, _ := storedState(t, f, "x")
		return c == "0"
	}, "the alarm to run again once the disk is back")
	if !strings.Contains(f.logs.String(), "alarm's storage commit failed") || !strings.Contains(f.logs.String(), "alarm failed; retrying with backoff") {
		t.Fatalf("the failed alarm commit and its retry were not logged:\n%s", f.logs)
	}
	if _, _, ok := storedState(t, f, "x"); ok {
		t.Fatal("the alarm is still set after it ran")
	}
}

// slowBackend delays every Apply, as a disk stalling on fsync would.
type slowBackend struct {
	storage.Backend
	delay atomic.Int64 // nanoseconds
}

func (b *slowBackend) Apply(batches []*storage.Batch) error {
	time.Sleep(time.Duration(b.delay.Load()))
	return b.Backend.Apply(batches)
}

// TestSlowCommitIsNeverAnAmbiguousFailure: a caller whose context ends
// while its event's writes are being made durable (a stalled fsync) still
// gets the event's real outcome — success once the writes are durable —
// rather than a context error for a write that then lands anyway: the edge
// API takes such an error for a failed shard and applies the write again
// through its SQL fallback, counting it twice.
func TestSlowCommitIsNeverAnAmbiguousFailure(t *testing.T) {
	sb := &slowBackend{Backend: storage.NewMemory()}
	f := start(t, counterConfig(t, func(c *host.Config) { c.Storage = sb }))
	f.call(t, "s", "POST", "/increment") // the instance is up
	sb.delay.Store(int64(400 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	resp, err := f.h.Fetch(ctx, "COUNTER", "s", &abi.Request{Method: "POST", Path: "/increment"})
	if err != nil {
		t.Fatalf("the increment ran and became durable, but the caller was told: %v", err)
	}
	if !strings.Contains(string(resp.Body), `"count":2`) {
		t.Fatalf("answer %s", resp.Body)
	}
	sb.delay.Store(0)
	if got := f.count(t, "s"); got != 2 {
		t.Fatalf("count %d, want 2", got)
	}
}
