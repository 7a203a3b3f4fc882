package sqldb

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/pgtest"
)

// TestTryLock: on PostgreSQL one session holds the lock at a time and a
// second asks in vain (without waiting) until the first releases it or
// its connection dies; on SQLite there is nothing to take.
func TestTryLock(t *testing.T) {
	ctx := context.Background()
	url := pgtest.DB(t)
	a, b := openURL(t, url, Options{}), openURL(t, url, Options{})
	const key = 42
	releaseA, ok, err := a.TryLock(ctx, key)
	if err != nil || !ok {
		t.Fatalf("first: %v %v", ok, err)
	}
	if _, ok, err := b.TryLock(ctx, key); err != nil || ok {
		t.Fatalf("second while held: %v %v", ok, err)
	}
	if release, ok, err := b.TryLock(ctx, key+1); err != nil || !ok {
		t.Fatalf("another key: %v %v", ok, err)
	} else {
		release()
	}
	releaseA()
	releaseB, ok, err := b.TryLock(ctx, key)
	if err != nil || !ok {
		t.Fatalf("after the release: %v %v", ok, err)
	}
	// A host that dies loses the lock with its session.
	if _, err := a.SQL().ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = ? AND granted", int64(key)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		release, ok, err := a.TryLock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			release()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock outlived its holder's session")
		}
	}
	releaseB() // its session is gone: harmless

	lite := openURL(t, Scheme+filepath.Join(t.TempDir(), "x.db"), Options{})
	release, ok, err := lite.TryLock(ctx, key)
	if err != nil || !ok {
		t.Fatalf("sqlite: %v %v", ok, err)
	}
	release()
}
