package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"math"
	"net"
	neturl "net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/pgtest"
)

func TestRewrite(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		args []any
		want string
	}{
		{"SELECT 1", nil, "SELECT 1"},
		{"SELECT ?", nil, "SELECT ?"}, // no arguments: a migration's text, as written
		{"SELECT ?, ?", []any{"a", nil}, "SELECT $1, $2"},
		{"SELECT ?, ?, ?", []any{int64(1), 2.5, []byte{1}}, "SELECT $1::bigint, $2::float8, $3::bytea"},
		{"VALUES (?1, ?2, ?1)", []any{int64(1), "x"}, "VALUES ($1::bigint, $2, $1::bigint)"},
		// A bare ? takes one more than the largest number so far, as in SQLite.
		{"SELECT ?2, ?, ?1, ?", []any{"a", "b", "c", "d"}, "SELECT $2, $3, $1, $4"},
		{"SELECT '?', \"?\", E'\\'?', $$?$$, $q$ ? $q$, ? -- ?\n/* ? /* ? */ ? */ , ?", []any{"a", "b"},
			"SELECT '?', \"?\", E'\\'?', $$?$$, $q$ ? $q$, $1 -- ?\n/* ? /* ? */ ? */ , $2"},
		{"SELECT 'it''s ?', ?", []any{"a"}, "SELECT 'it''s ?', $1"},
		{"SELECT a$b, $1, ?", []any{"a"}, "SELECT a$b, $1, $1"},
		{"SELECT x FROM t WHERE y = ?", []any{int64(7)}, "SELECT x FROM t WHERE y = $1::bigint"},
		{"SELECT ?3", []any{"a"}, "SELECT $3"}, // past the arguments: PostgreSQL says so
	} {
		got, err := rewrite(tc.sql, tc.args)
		if err != nil || got != tc.want {
			t.Errorf("rewrite(%q) = %q, %v; want %q", tc.sql, got, err, tc.want)
		}
	}
	if got, err := rewritePrepared("SELECT ?, ?5, '?'"); err != nil || got != "SELECT $1, $5, '?'" {
		t.Errorf("rewritePrepared = %q, %v", got, err)
	}
	if _, err := rewrite("SELECT ?0", []any{"a"}); !errors.Is(err, ErrInvalidArg) {
		t.Errorf("?0: %v", err)
	}
	if _, err := rewrite("SELECT ?99999", []any{"a"}); !errors.Is(err, ErrInvalidArg) {
		t.Errorf("?99999: %v", err)
	}
}

// TestPostgresValues: every ABI value goes in and comes back with its type;
// PostgreSQL's other types come back as the ABI's nearest value.
func TestPostgresValues(t *testing.T) {
	db := openPG(t, Options{})
	batch(t, db, st("CREATE TABLE v (k BIGINT PRIMARY KEY, i BIGINT, f DOUBLE PRECISION, s TEXT, b BYTEA)"))
	in := [][]any{
		{int64(1), int64(math.MinInt64), 3.25, "héllo 'quoted' \"too\" ?", []byte{0, 1, 2, 255}},
		{int64(2), nil, nil, "", []byte{}},
		{int64(3), int64(math.MaxInt64), -0.5, "x", []byte("text-like")},
		{int64(4), int64(0), math.Inf(1), "∞", nil},
	}
	var stmts []abi.Statement
	for _, r := range in {
		stmts = append(stmts, st("INSERT INTO v VALUES (?, ?, ?, ?, ?)", r...))
	}
	stmts = append(stmts, st("SELECT k, i, f, s, b FROM v ORDER BY k"))
	got := batch(t, db, stmts...)[len(stmts)-1]
	if !reflect.DeepEqual(got.Rows, in) {
		t.Errorf("rows\n got %#v\nwant %#v", got.Rows, in)
	}
	// A parameter has its value's type, as on SQLite, not its context's.
	res := batch(t, db, st("SELECT ?, ?, ?, ?, ?, CASE WHEN ? > 0 THEN ? ELSE 0 END", int64(5), 0.5, "s", []byte{9}, nil, int64(1<<40), int64(1<<40)))
	if want := []any{int64(5), 0.5, "s", []byte{9}, nil, int64(1 << 40)}; !reflect.DeepEqual(res[0].Rows[0], want) {
		t.Errorf("parameters %#v, want %#v", res[0].Rows[0], want)
	}
	// Other types: numeric as a number (SUM of bigints is numeric), bool
	// as 0/1, the rest as text (timestamps in UTC).
	res = batch(t, db, st(`SELECT SUM(i), AVG(k), true, false, 2::smallint, 1.5::real,
		'2024-01-02 03:04:05+02'::timestamptz, '{"a":1}'::jsonb, '{1,2}'::int[],
		'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid FROM v WHERE k > 2`))
	want := []any{int64(math.MaxInt64), 3.5, int64(1), int64(0), int64(2), 1.5,
		"2024-01-02 01:04:05+00", `{"a": 1}`, "{1,2}", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}
	if !reflect.DeepEqual(res[0].Rows[0], want) {
		t.Errorf("other types %#v, want %#v", res[0].Rows[0], want)
	}
	// A string uuid fits a uuid column: text parameters take their context's type.
	batch(t, db, st("CREATE TABLE u (id UUID PRIMARY KEY, at TIMESTAMPTZ)"),
		st("INSERT INTO u VALUES (?, ?)", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "2024-01-02T03:04:05Z"))
	// PostgreSQL's types are strict, as SQLite's STRICT tables are.
	_, err := db.Batch(context.Background(), []abi.Statement{st("INSERT INTO v (k, i) VALUES (?, ?)", int64(9), "soon")})
	if err == nil || !strings.Contains(err.Error(), `invalid input syntax for type bigint: "soon"`) {
		t.Errorf("text into a bigint column: %v", err)
	}
}

func TestPostgresSettings(t *testing.T) {
	db := openPG(t, Options{StatementTimeout: 1500 * time.Millisecond, Password: "unused-with-trust", MaxOpenConns: 3})
	if db.Dialect() != DialectPostgres || db.Path() != "" {
		t.Errorf("dialect %q, path %q", db.Dialect(), db.Path())
	}
	res := batch(t, db, st("SELECT current_setting('statement_timeout'), current_setting('TimeZone'), current_setting('application_name')"))
	if want := []any{"1500ms", "UTC", "edgeshard"}; !reflect.DeepEqual(res[0].Rows[0], want) {
		t.Errorf("settings %v, want %v", res[0].Rows[0], want)
	}
	if n := db.SQL().Stats().MaxOpenConnections; n != 3 {
		t.Errorf("pool size %d, want 3", n)
	}
	// Migrate lifts statement_timeout on its connection, and puts it back.
	one := openPG(t, Options{StatementTimeout: 1500 * time.Millisecond, MaxOpenConns: 1})
	if _, err := one.Migrate(context.Background(), testMigrations(t)); err != nil {
		t.Fatal(err)
	}
	if v := batch(t, one, st("SELECT current_setting('statement_timeout')"))[0].Rows[0][0]; v != "1500ms" {
		t.Errorf("statement_timeout after Migrate: %v", v)
	}

	short := openPG(t, Options{StatementTimeout: 50 * time.Millisecond})
	_, err := short.Batch(context.Background(), []abi.Statement{st("SELECT 1"), st("SELECT pg_sleep(1)")})
	if err == nil || err.Error() != "statement 1: canceling statement due to statement timeout" || SQLState(err) != "57014" {
		t.Errorf("a statement past the timeout: %v", err)
	}
}

func TestOpenPostgresErrors(t *testing.T) {
	_, err := Open("postgres://edgeshard:s3cret@127.0.0.1:1/db?connect_timeout=2", Options{})
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), `open sql database "postgres://edgeshard:xxxxx@127.0.0.1:1/db?connect_timeout=2"`) {
		t.Errorf("unreachable server: %v", err)
	}
	if _, err := Open("postgres://h/db?sslmode=bogus", Options{}); err == nil || !strings.Contains(err.Error(), "sslmode") {
		t.Errorf("bad sslmode: %v", err)
	}
	if _, err := Open("sqlite://:memory:", Options{StatementTimeout: time.Second}); err == nil {
		t.Error("statement timeout accepted for SQLite")
	}
	for in, want := range map[string]string{
		"postgres://u:p@h/db":     "postgres://u:xxxxx@h/db",
		"postgres://u@h/db":       "postgres://u@h/db",
		"sqlite://./d1.db":        "sqlite://./d1.db",
		"postgresql://u:p@h:5/db": "postgresql://u:xxxxx@h:5/db",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSQLPoolPlaceholders: the pool SQL returns takes SQLite's
// placeholders on both dialects.
func TestSQLPoolPlaceholders(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, db *DB) {
		var n, m int64
		var s string
		if err := db.SQL().QueryRow("SELECT ?1 + ?1, ? * 3, ?", int64(2), 5, "x").Scan(&n, &m, &s); err != nil {
			t.Fatal(err)
		}
		if n != 4 || m != 15 || s != "x" {
			t.Errorf("got %d %d %q", n, m, s)
		}
		// Prepared before its arguments are known, too.
		stmt, err := db.SQL().Prepare("SELECT ? || ?")
		if err != nil {
			t.Fatal(err)
		}
		defer stmt.Close()
		if err := stmt.QueryRow("a", "b").Scan(&s); err != nil || s != "ab" {
			t.Errorf("prepared: %q, %v", s, err)
		}
	})
}

// TestRunTx: read-then-write transactions from 8 goroutines lose no
// update: SQLite runs them one at a time, PostgreSQL serializably with
// retries.
func TestRunTx(t *testing.T) {
	eachBackend(t, Options{MaxOpenConns: 8}, func(t *testing.T, db *DB) {
		batch(t, db, st("CREATE TABLE c (k TEXT PRIMARY KEY, n BIGINT NOT NULL)"), st("INSERT INTO c VALUES ('a', 0)"))
		const workers, rounds = 8, 20
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make(chan error, workers*rounds)
		for range workers {
			wg.Go(func() {
				for range rounds {
					errs <- db.Tx(ctx, func(tx *sql.Tx) error {
						var n int64
						if err := tx.QueryRowContext(ctx, "SELECT n FROM c WHERE k = ?", "a").Scan(&n); err != nil {
							return err
						}
						_, err := tx.ExecContext(ctx, "UPDATE c SET n = ? WHERE k = ?", n+1, "a")
						return err
					})
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := batch(t, db, st("SELECT n FROM c"))[0].Rows[0][0]; n != int64(workers*rounds) {
			t.Fatalf("n = %v, want %d (an update was lost)", n, workers*rounds)
		}
		// fn's error rolls back and comes back as is.
		boom := errors.New("boom")
		err := db.Tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "UPDATE c SET n = 0"); err != nil {
				return err
			}
			return boom
		})
		if err != boom {
			t.Fatalf("Tx returned %v", err)
		}
		if n := batch(t, db, st("SELECT n FROM c"))[0].Rows[0][0]; n != int64(workers*rounds) {
			t.Fatalf("n = %v after a failed Tx", n)
		}
	})
}

// delayProxy forwards TCP connections to target, holding every chunk the
// server sends for delay (the client's writes pass at once): a database
// one round trip of delay away.
func delayProxy(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			type chunk struct {
				b  []byte
				at time.Time
			}
			ch := make(chan chunk, 1024)
			wg.Add(3)
			go func() { defer wg.Done(); io.Copy(s, c); s.Close() }()
			go func() {
				defer wg.Done()
				defer close(ch)
				for {
					b := make([]byte, 64<<10)
					n, err := s.Read(b)
					if n > 0 {
						ch <- chunk{b[:n], time.Now().Add(delay)}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for k := range ch {
					time.Sleep(time.Until(k.at))
					if _, err := c.Write(k.b); err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	})
	return ln.Addr().String()
}

// TestPostgresBatchOneRoundTrip: a batch costs one round trip to the
// server however many statements it has (BEGIN, the statements and COMMIT
// are pipelined), where a transaction sent statement by statement costs
// one per statement — what a POP far from its database pays per flush.
func TestPostgresBatchOneRoundTrip(t *testing.T) {
	const rtt = 100 * time.Millisecond
	u, err := neturl.Parse(pgtest.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = delayProxy(t, u.Host, rtt)
	db := openURL(t, u.String(), Options{MaxOpenConns: 1})
	ctx := context.Background()
	batch(t, db, st("CREATE TABLE e (id BIGINT PRIMARY KEY, v TEXT)"))
	stmts := make([]abi.Statement, 10)
	for i := range stmts {
		stmts[i] = st("INSERT INTO e VALUES (?, ?) ON CONFLICT (id) DO NOTHING", int64(i), "x")
	}
	start := time.Now()
	if _, err := db.Batch(ctx, stmts); err != nil {
		t.Fatal(err)
	}
	pipelined := time.Since(start)
	start = time.Now()
	err = db.Tx(ctx, func(tx *sql.Tx) error {
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s.SQL, s.Args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	oneByOne := time.Since(start)
	t.Logf("10 statements at %v a round trip: batch %v, statement by statement %v", rtt, pipelined.Round(time.Millisecond), oneByOne.Round(time.Millisecond))
	if pipelined >= 3*rtt || oneByOne < 10*rtt {
		t.Fatalf("batch took %v (want about one round trip, %v); statement by statement %v", pipelined, rtt, oneByOne)
	}
}
