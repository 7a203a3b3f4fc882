package edge

import (
	"context"
	"database/sql"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// lockSQL holds the SQLite database's write lock from a second pool (as
// another process would) until the returned function is called.
func lockSQL(t *testing.T, db *sqldb.DB) (unlock func()) {
	t.Helper()
	other, err := sqldb.Open("sqlite://"+db.Path(), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := other.SQL().Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	return func() {
		conn.ExecContext(context.Background(), "ROLLBACK")
		conn.Close()
		other.Close()
	}
}

// TestSQLLockedFailsFast: with the database locked, a like fails within the
// request's SQL budget (not a busy timeout per step) with E-VIBECODR-2145;
// after a few failures the database is known down and requests fail at
// once — a stats read too, and the proxy's rate limiter goes straight to
// memory; once the lock is gone, a retry after the cooldown closes the
// circuit.
func TestSQLLockedFailsFast(t *testing.T) {
	f, _ := fakeFixture(t, func(c *Config, _ *Deps, _ *fakeShards) { c.SQLBudget = 500 * time.Millisecond })
	unlock := lockSQL(t, f.db)
	t0 := time.Now()
	r := f.do("PUT", "/posts/p1/like", "alice", nil)
	if took := time.Since(t0); r.status != 503 || took > 3*time.Second {
		t.Fatalf("like with SQL locked: %d %s after %v, want 503 within the 500 ms budget", r.status, r.body, took)
	}
	if !strings.Contains(f.logs.String(), CodeCounterLegacyFailed) {
		t.Fatalf("no %s logged for a failed source-row write:\n%s", CodeCounterLegacyFailed, f.logs.String())
	}
	for i := 0; i < sqlTripAfter; i++ {
		f.do("PUT", "/posts/p1/like", "alice", nil)
	}
	if !f.api.guard.open() {
		t.Fatal("the circuit is not open after repeated failures")
	}
	t0 = time.Now()
	for _, path := range []string{"/posts/p1/like", "/posts/p1/stats"} {
		method := "PUT"
		if strings.HasSuffix(path, "stats") {
			method = "GET"
		}
		r := f.do(method, path, "alice", nil)
		if r.status != 503 {
			t.Fatalf("%s %s with SQL known down: %d %s", method, path, r.status, r.body)
		}
	}
	if took := time.Since(t0); took > 200*time.Millisecond {
		t.Fatalf("requests with SQL known down took %v; want at once", took)
	}
	unlock()
	f.api.guard.mu.Lock()
	f.api.guard.openUntil = time.Now() // the cooldown is over
	f.api.guard.mu.Unlock()
	if r := f.do("PUT", "/posts/p1/like", "alice", nil); r.status != 200 {
		t.Fatalf("like after SQL came back: %d %s", r.status, r.body)
	}
	if f.api.guard.open() {
		t.Fatal("the circuit stayed open after a successful retry")
	}
}

func TestSQLGuardHalfOpen(t *testing.T) {
	now := time.Unix(1000, 0)
	g := &sqlGuard{now: func() time.Time { return now }}
	fail := sql.ErrConnDone
	for i := 0; i < sqlTripAfter; i++ {
		if err := g.allow(); err != nil {
			t.Fatalf("closed circuit refused: %v", err)
		}
		g.record(fail)
	}
	if g.allow() != errSQLDown {
		t.Fatal("open circuit allowed a call")
	}
	now = now.Add(sqlCooldown)
	if err := g.allow(); err != nil {
		t.Fatal("no trial after the cooldown")
	}
	if g.allow() != errSQLDown {
		t.Fatal("a second caller got through during the trial")
	}
	g.record(fail)
	if g.allow() != errSQLDown {
		t.Fatal("a failed trial did not reopen the circuit")
	}
	now = now.Add(sqlCooldown)
	g.allow()
	g.record(nil)
	if g.open() || g.allow() != nil {
		t.Fatal("a successful trial did not close the circuit")
	}
	g.record(context.Canceled)
	if g.failures != 0 {
		t.Fatal("a client's cancellation counted as a database failure")
	}
}

// TestReadyChecksSQLTakesWrites: /readyz's check fails while the database
// is locked by another writer, after its file was deleted, and while the
// circuit is open — not only when it cannot be pinged.
func TestReadyChecksSQLTakesWrites(t *testing.T) {
	f, _ := fakeFixture(t, nil)
	ctx := context.Background()
	if err := f.api.Ready(ctx); err != nil {
		t.Fatalf("ready: %v", err)
	}
	unlock := lockSQL(t, f.db)
	if err := f.api.Ready(ctx); err == nil {
		t.Fatal("ready while another writer holds the lock")
	}
	unlock()
	if err := f.api.Ready(ctx); err != nil {
		t.Fatalf("ready after the lock is gone: %v", err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(f.db.Path() + suffix)
	}
	if err := f.api.Ready(ctx); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("ready after the database file was deleted: %v", err)
	}
}

// TestLegacyDecrementClampsAtZero: through the legacy path (COUNTER_DO_MODE
// off), a decrement of a counter already at 0 leaves 0 and answers 200.
func TestLegacyDecrementClampsAtZero(t *testing.T) {
	f, _ := fakeFixture(t, func(c *Config, _ *Deps, _ *fakeShards) { c.CounterMode = ModeOff })
	if r := f.do("PUT", "/posts/p1/like", "alice", nil); r.status != 200 {
		t.Fatalf("like: %d %s", r.status, r.body)
	}
	if _, err := f.db.SQL().Exec("UPDATE post_stats SET likes = 0 WHERE post_id = 'p1'"); err != nil {
		t.Fatal(err)
	}
	if r := f.do("DELETE", "/posts/p1/like", "alice", nil); r.status != 200 {
		t.Fatalf("unlike of a counter at 0: %d %s", r.status, r.body)
	}
	var st PostStats
	f.do("GET", "/posts/p1/stats", "", nil).json(t, &st)
	if st.Likes != 0 {
		t.Fatalf("likes = %d after a decrement at 0, want 0 (clamped)", st.Likes)
	}
}
