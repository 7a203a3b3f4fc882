// Package sqldb is the SQL binding ("D1") of edgeshard: a database/sql pool
// over an embedded SQLite database (modernc.org/sqlite, pure Go) or over
// PostgreSQL (pgx), batches that run all or nothing in one transaction, and
// a small versioned migration runner.
//
// One statement text serves both dialects: statements are written in
// SQLite's placeholders (? and ?NNN), which the PostgreSQL side rewrites to
// $N, and in SQL both accept (see abi/ABI.md, "SQL dialects"). Values
// crossing Batch are the ABI's SQL values only: nil, int64, float64, string
// and []byte, on either side.
package sqldb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
)

// Scheme is the URL scheme of an SQLite database.
const Scheme = "sqlite://"

// The dialects a DB speaks (DB.Dialect); they also name the subdirectories
// of per-dialect migrations (LoadMigrations).
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
)

// memoryPath is the path that selects a private in-memory database.
const memoryPath = ":memory:"

// Options tunes a database opened with Open. The zero value is valid: every
// field has a default.
type Options struct {
	// Synchronous is SQLite's PRAGMA synchronous: "FULL" (default) makes every
	// commit durable on power loss; "NORMAL" is durable across process
	// crashes and, in WAL mode, may lose the last commits on power loss.
	Synchronous string
	// BusyTimeout is how long a statement waits for a lock another
	// connection holds before failing with SQLITE_BUSY (default 5s).
	BusyTimeout time.Duration
	// MaxOpenConns caps the pool (default max(4, GOMAXPROCS)). On SQLite
	// writers are serialised anyway; more connections only help readers.
	// On PostgreSQL it bounds this host's connections to the server.
	MaxOpenConns int

	// StatementTimeout is PostgreSQL's statement_timeout for every
	// connection: the server cancels a statement that runs longer (0: the
	// server's or role's own setting). SQLite has none: BusyTimeout bounds
	// the wait for its lock.
	StatementTimeout time.Duration
	// Password, when not empty, is the PostgreSQL password, in place of the
	// URL's and of PGPASSWORD (a secret read from the environment by the
	// caller, never written in a config file).
	Password string
	// ApplicationName is PostgreSQL's application_name of every
	// connection (default "edgeshard"; the URL's own wins), what
	// pg_stat_activity shows: a fleet's hosts name their node in it.
	ApplicationName string
}

func (o Options) withDefaults() (Options, error) {
	switch strings.ToUpper(o.Synchronous) {
	case "":
		o.Synchronous = "FULL"
	case "FULL", "NORMAL":
		o.Synchronous = strings.ToUpper(o.Synchronous)
	default:
		return o, fmt.Errorf("synchronous %q: want FULL or NORMAL", o.Synchronous)
	}
	switch {
	case o.BusyTimeout == 0:
		o.BusyTimeout = 5 * time.Second
	case o.BusyTimeout < 0:
		return o, fmt.Errorf("negative busy timeout %v", o.BusyTimeout)
	}
	switch {
	case o.MaxOpenConns == 0:
		o.MaxOpenConns = max(4, runtime.GOMAXPROCS(0))
	case o.MaxOpenConns < 0:
		return o, fmt.Errorf("negative MaxOpenConns %d", o.MaxOpenConns)
	}
	if o.StatementTimeout < 0 {
		return o, fmt.Errorf("negative statement timeout %v", o.StatementTimeout)
	}
	return o, nil
}

// DB is an open SQL database. It is safe for concurrent use.
type DB struct {
	db      *sql.DB
	url     string // redacted: no password
	dialect string
	path    string // SQLite file path, or "" (in-memory database, PostgreSQL)
	opts    Options
	retries atomic.Int64 // PostgreSQL batches run again (Retries)

	fenceMu    sync.Mutex // fence.go: the fence table created once
	fenceReady bool

	// keep holds one connection to an in-memory database open for the DB's
	// lifetime, so the database survives the pool closing all of its own.
	keep driver.Conn

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the database named by url:
//
//	sqlite://./data/d1.db    a file relative to the working directory
//	sqlite:///abs/path.db    an absolute file path
//	sqlite://:memory:        a private in-memory database, shared by the
//	                         pool's connections and gone after Close
//	postgres://user@host:5432/db?sslmode=verify-full
//	postgresql://…           a PostgreSQL database (see openPostgres)
//
// SQLite: parent directories of a file are created. Every connection runs
// with busy_timeout, synchronous and foreign_keys=ON; file databases use
// WAL, and read-write transactions start with BEGIN IMMEDIATE so that two
// writers never deadlock upgrading a read lock (the loser would get
// SQLITE_BUSY at once, without waiting). Open pings the database, so a bad
// path or an unreachable server fails here. Errors name the URL without its
// password (Redact).
func Open(url string, opts Options) (*DB, error) {
	d, err := open(url, opts)
	if err != nil {
		return nil, fmt.Errorf("open sql database %q: %w", Redact(url), err)
	}
	return d, nil
}

// IsPostgresURL reports whether url names a PostgreSQL database
// (postgres:// or postgresql://).
func IsPostgresURL(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

func open(url string, opts Options) (*DB, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if IsPostgresURL(url) {
		return openPostgres(url, opts)
	}
	if opts.StatementTimeout != 0 || opts.Password != "" {
		return nil, errors.New("statement timeout and password apply to PostgreSQL only")
	}
	path, err := parseURL(url)
	if err != nil {
		return nil, err
	}

	params := []string{
		"_txlock=immediate",
		"_busy_timeout=" + strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10),
		"_foreign_keys=1",
		"_synchronous=" + opts.Synchronous,
	}
	d := &DB{url: url, dialect: DialectSQLite, opts: opts}
	var dsn string
	if path == memoryPath {
		// The memdb VFS gives a database shared by every connection that
		// names it, with ordinary locking (busy_timeout applies), unlike
		// shared-cache mode whose table locks fail at once.
		name, err := randomName()
		if err != nil {
			return nil, err
		}
		dsn = "file:/edgeshard-" + name + "?vfs=memdb&" + strings.Join(params, "&")
		d.keep, err = (&sqlite.Driver{}).Open(dsn)
		if err != nil {
			return nil, err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("create directory: %w", err)
		}
		d.path = path
		params = append(params, "_journal_mode=WAL")
		// Not a file: URI, so the path needs no escaping; modernc cuts the
		// parameters at the first '?', which parseURL refused in the path.
		dsn = path + "?" + strings.Join(params, "&")
	}

	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		d.closeKeep()
		return nil, err
	}
	db.SetMaxOpenConns(opts.MaxOpenConns)
	db.SetMaxIdleConns(opts.MaxOpenConns)
	d.db = db

	ctx, cancel := context.WithTimeout(context.Background(), opts.BusyTimeout+5*time.Second)
	defer cancel()
	if err := d.check(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// check pings the database and verifies that the connection settings took.
func (d *DB) check(ctx context.Context) error {
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var fk int64
	if err := conn.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return err
	}
	if fk != 1 {
		return errors.New("foreign_keys could not be enabled")
	}
	if d.path != "" {
		var mode string
		if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			return err
		}
		if !strings.EqualFold(mode, "wal") {
			return fmt.Errorf("journal_mode is %q, want wal (does the file system support shared memory?)", mode)
		}
	}
	return nil
}

// parseURL returns the file path of a sqlite:// URL, or memoryPath.
func parseURL(u string) (string, error) {
	path, ok := strings.CutPrefix(u, Scheme)
	if !ok {
		scheme, _, found := strings.Cut(u, "://")
		if !found {
			return "", fmt.Errorf("missing scheme, want %s<path> or postgres://…", Scheme)
		}
		return "", fmt.Errorf("unknown scheme %q, want %q or \"postgres://\"", scheme+"://", Scheme)
	}
	switch {
	case path == "":
		return "", errors.New("empty path")
	case strings.ContainsAny(path, "?#"):
		return "", errors.New("query or fragment in URL not supported")
	case strings.HasPrefix(path, "file:"):
		return "", errors.New("file: URIs not supported; give a plain path")
	}
	return path, nil
}

func randomName() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random database name: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// SQL returns the underlying pool, for callers that need database/sql
// directly. On SQLite, transactions begun on it are BEGIN IMMEDIATE unless
// read-only. On PostgreSQL its statements take ? and ?NNN placeholders as
// on SQLite (rewritten to $N); its transactions have the server's default
// isolation: use RunTx for one that behaves as on SQLite.
func (d *DB) SQL() *sql.DB { return d.db }

// Dialect returns DialectSQLite or DialectPostgres.
func (d *DB) Dialect() string { return d.dialect }

// Path returns the SQLite database file path, or "" for an in-memory or a
// PostgreSQL database.
func (d *DB) Path() string { return d.path }

// Redact returns url with its password, if any, replaced by "xxxxx", for
// logs and error messages.
func Redact(rawURL string) string {
	u, err := neturl.Parse(rawURL)
	if err != nil || u.User == nil {
		if err != nil && strings.Contains(rawURL, "@") {
			return "(unparsable URL)"
		}
		return rawURL
	}
	if _, has := u.User.Password(); !has {
		return rawURL
	}
	return u.Redacted()
}

// Close closes the pool. An in-memory database is discarded. Close is
// idempotent.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		if d.db != nil {
			errs = append(errs, d.db.Close())
		}
		errs = append(errs, d.closeKeep())
		if err := errors.Join(errs...); err != nil {
			d.closeErr = fmt.Errorf("close sql database %q: %w", Redact(d.url), err)
		}
	})
	return d.closeErr
}

func (d *DB) closeKeep() error {
	if d.keep == nil {
		return nil
	}
	err := d.keep.Close()
	d.keep = nil
	return err
}
