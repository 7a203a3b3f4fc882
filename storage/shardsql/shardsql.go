// Package shardsql is a shard's own SQL database: one embedded SQLite file
// per shard (a binding's sql = "shard"), written only by the shard's actor,
// so shards never contend for one database's write lock.
//
// An event's SQL runs in one transaction that stays open for the whole
// event: each batch the guest sends is all or nothing inside it (a
// SAVEPOINT), and the transaction commits when the event ends, just before
// the event's key-value writes go to the group committer. The commit also
// records, in the reserved table _edgeshard_event, a sequence number and a
// copy of the event's key-value writes (the redo record, EncodeRedo). The
// host writes the same sequence number to key-value storage right after
// the event's writes; if the process dies between the two commits, the
// next start of the shard finds the database ahead of key-value storage
// and applies the redo record (docs/WRITING_SHARDS.md, "A database per
// shard"). So an event's SQL and key-value writes become durable together.
//
// Files live under the data directory (Path): data_dir/shardsql/<binding>/
// <sha256 of the shard name>.db, with SQLite's -wal and -shm beside them.
// Export and Import carry one shard's database as a byte stream (backup,
// restore, a shard moving to another host).
package shardsql

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Dir is the directory under the data directory that holds the shards'
// databases.
const Dir = "shardsql"

// Reserved is the prefix of the names the host keeps in a shard's database
// (the table _edgeshard_event). A guest statement that mentions it is
// refused (ErrReserved).
const Reserved = "_edgeshard_"

// Errors callers branch on (errors.Is).
var (
	// ErrFull reports a statement refused because the database reached its
	// size cap (Options.MaxBytes). Nothing of the batch applied; deleting
	// rows (or VACUUM) makes room again.
	ErrFull = errors.New("shard database full")
	// ErrReserved reports a statement naming the host's reserved tables.
	ErrReserved = errors.New("reserved name")
	// ErrEventLost reports an event whose transaction SQLite rolled back on
	// its own after an error (an I/O error, disk full): the event's earlier
	// batches are gone, so the event must fail as a whole.
	ErrEventLost = errors.New("the event's SQL transaction was rolled back")
)

// Path returns the file of the database of shard in binding under dataDir.
// The binding name is path-escaped; the shard name, which may hold any
// bytes, is hashed (SHA-256, hex).
func Path(dataDir, binding, shard string) string {
	sum := sha256.Sum256([]byte(shard))
	return filepath.Join(dataDir, Dir, url.PathEscape(binding), hex.EncodeToString(sum[:])+".db")
}

// Options tune Open.
type Options struct {
	// MaxBytes caps the database file (SQLite's max_page_count); ≤ 0: no
	// cap. A statement that would grow it further fails with ErrFull.
	MaxBytes int64
	// Synchronous is "FULL" (the default: every commit survives power
	// loss) or "NORMAL".
	Synchronous string
}

// pageSize is the page size of new databases (SQLite's default).
const pageSize = 4096

// DB is one shard's open database. It is not safe for concurrent use: the
// shard's actor alone uses it, one event at a time.
type DB struct {
	db       *sql.DB
	path     string
	maxPages int64 // 0: no cap
	tx       *sql.Tx
	batches  int      // batches applied in tx
	changes  [3]int64 // changeCount when tx began
	lost     error    // the event's transaction is gone (ErrEventLost)
	seq      uint64   // the last event recorded in _edgeshard_event
}

const schema = `CREATE TABLE IF NOT EXISTS _edgeshard_event (
	id  INTEGER PRIMARY KEY CHECK (id = 1),
	seq INTEGER NOT NULL,
	kv  BLOB
)`

// Open opens (creating it and its directory if needed) the database at
// path.
func Open(path string, opts Options) (*DB, error) {
	d, err := open(path, opts)
	if err != nil {
		return nil, fmt.Errorf("open shard database %s: %w", path, err)
	}
	return d, nil
}

func open(path string, opts Options) (*DB, error) {
	sync := strings.ToUpper(opts.Synchronous)
	switch sync {
	case "":
		sync = "FULL"
	case "FULL", "NORMAL":
	default:
		return nil, fmt.Errorf("synchronous %q: want FULL or NORMAL", opts.Synchronous)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	d := &DB{path: path}
	params := []string{
		"_txlock=immediate",
		"_pragma=busy_timeout(5000)",
		"_pragma=foreign_keys(1)",
		"_pragma=synchronous(" + sync + ")",
		"_pragma=journal_mode(WAL)",
	}
	if opts.MaxBytes > 0 {
		d.maxPages = max(opts.MaxBytes/pageSize, 8)
		params = append(params, "_pragma=max_page_count("+strconv.FormatInt(d.maxPages, 10)+")")
	}
	db, err := sql.Open("sqlite", path+"?"+strings.Join(params, "&"))
	if err != nil {
		return nil, err
	}
	// One connection: the actor is the only user, and max_page_count and
	// the event's transaction live on the connection.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	d.db = db
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, err
	}
	var seq int64
	err = db.QueryRowContext(ctx, "SELECT seq FROM _edgeshard_event WHERE id = 1").Scan(&seq)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		db.Close()
		return nil, err
	default:
		d.seq = uint64(seq)
	}
	return d, nil
}

// Path returns the database's file.
func (d *DB) Path() string { return d.path }

// Seq returns the sequence number of the last event recorded.
func (d *DB) Seq() uint64 { return d.seq }

// Raise makes the next recorded event's sequence number greater than seq
// (the host's key-value marker may be ahead after an Import).
func (d *DB) Raise(seq uint64) { d.seq = max(d.seq, seq) }

// InEvent reports whether the current event has run SQL that is not
// committed yet.
func (d *DB) InEvent() bool { return d.tx != nil || d.lost != nil }

// Batch runs stmts inside the current event's transaction, starting it if
// needed; the batch applies as a whole or not at all (a SAVEPOINT), and
// commits with the event (Commit). Errors are those of sqldb.DB.Batch, and
// ErrFull (wrapped) when the size cap refused a statement, ErrReserved for
// a statement naming the host's table, ErrEventLost when SQLite rolled the
// whole event back.
func (d *DB) Batch(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	if d.lost != nil {
		return nil, d.lost
	}
	for i, st := range stmts {
		if strings.Contains(strings.ToLower(st.SQL), Reserved) {
			return nil, &sqldb.StatementError{Index: i, Err: fmt.Errorf("%w: names starting %q belong to the host", ErrReserved, Reserved)}
		}
	}
	if len(stmts) == 0 {
		return []abi.Result{}, nil
	}
	if d.tx == nil {
		// Not ctx: database/sql rolls a transaction back when the context
		// of BeginTx ends, and this one outlives the host call.
		tx, err := d.db.BeginTx(context.Background(), nil)
		if err != nil {
			return nil, fmt.Errorf("begin transaction: %w", err)
		}
		changes, err := changeCount(tx)
		if err != nil {
			_ = tx.Rollback()
			return nil, fmt.Errorf("begin transaction: %w", err)
		}
		d.tx, d.batches, d.changes = tx, 0, changes
	}
	if _, err := d.tx.ExecContext(ctx, "SAVEPOINT edgeshard_batch"); err != nil {
		return nil, d.loseEvent(err)
	}
	res, err := sqldb.BatchInTx(ctx, d.tx, stmts)
	if err != nil {
		err = d.classify(err)
		if rerr := d.undoBatch(); rerr != nil {
			// SQLite rolled the whole transaction back (it may, on
			// SQLITE_FULL or an I/O error): harmless if this was the
			// event's first batch, fatal to the event otherwise.
			_ = d.tx.Rollback()
			d.tx = nil
			if d.batches == 0 {
				return nil, err
			}
			return nil, d.loseEvent(err)
		}
		return nil, err
	}
	if _, err := d.tx.ExecContext(ctx, "RELEASE edgeshard_batch"); err != nil {
		return nil, d.loseEvent(err)
	}
	d.batches++
	return res, nil
}

// undoBatch rolls the failed batch back to its savepoint.
func (d *DB) undoBatch() error {
	ctx := context.Background()
	if _, err := d.tx.ExecContext(ctx, "ROLLBACK TO edgeshard_batch"); err != nil {
		return err
	}
	_, err := d.tx.ExecContext(ctx, "RELEASE edgeshard_batch")
	return err
}

// classify marks a statement that failed with SQLITE_FULL under a size
// cap: SQLite says "database or disk is full" alike, and by the time the
// error is seen it may have rolled back what would show which.
func (d *DB) classify(err error) error {
	if sqldb.Code(err)&0xff != 13 || d.maxPages == 0 { // SQLITE_FULL
		return err
	}
	return fmt.Errorf("%w: its size cap is %d bytes (limits.shard_sql_bytes), unless the disk itself is full: %w", ErrFull, d.maxPages*pageSize, err)
}

// loseEvent records that the event's transaction is gone: its later
// batches and its Commit fail with the error.
func (d *DB) loseEvent(err error) error {
	d.lost = fmt.Errorf("%w: %w", ErrEventLost, err)
	if d.tx != nil {
		_ = d.tx.Rollback()
		d.tx = nil
	}
	return d.lost
}

// Commit ends the event's transaction. A non-nil redo (EncodeRedo of the
// event's key-value writes) is recorded with the event's sequence number,
// which Commit returns, unless the event's SQL changed no row; otherwise
// the record is left as it is and Commit returns 0. Commit is a no-op returning 0 when the event ran no
// SQL. On error nothing of the event is committed.
func (d *DB) Commit(redo []byte) (uint64, error) {
	if err := d.lost; err != nil {
		d.lost = nil
		return 0, err
	}
	if d.tx == nil {
		return 0, nil
	}
	tx := d.tx
	d.tx = nil
	if redo != nil {
		// An event whose SQL changed nothing needs no record: its
		// key-value writes stand alone.
		changes, err := changeCount(tx)
		if err != nil {
			_ = tx.Rollback()
			return 0, err
		}
		if changes == d.changes {
			redo = nil
		}
	}
	var seq uint64
	if redo != nil {
		seq = d.seq + 1
		_, err := tx.Exec("INSERT INTO _edgeshard_event (id, seq, kv) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, kv = excluded.kv", int64(seq), redo)
		if err != nil {
			_ = tx.Rollback()
			return 0, fmt.Errorf("record the event: %w", d.classify(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	if redo != nil {
		d.seq = seq
	}
	return seq, nil
}

// changeCount tells whether a transaction wrote: rows changed
// (total_changes), schema changed (schema_version: CREATE, DROP, ALTER,
// which total_changes ignores) and the user_version pragma.
func changeCount(tx *sql.Tx) ([3]int64, error) {
	var c [3]int64
	err := tx.QueryRow("SELECT total_changes(), (SELECT schema_version FROM pragma_schema_version), (SELECT user_version FROM pragma_user_version)").Scan(&c[0], &c[1], &c[2])
	if err != nil {
		return c, fmt.Errorf("count changes: %w", err)
	}
	return c, nil
}

// Rollback discards the event's SQL (the event failed).
func (d *DB) Rollback() {
	if d.tx != nil {
		_ = d.tx.Rollback()
		d.tx = nil
	}
	d.lost = nil
}

// Redo returns the recorded event: its sequence number and redo record
// (nil when none is kept, e.g. after Import).
func (d *DB) Redo(ctx context.Context) (uint64, []byte, error) {
	var seq int64
	var kv []byte
	q := "SELECT seq, kv FROM _edgeshard_event WHERE id = 1"
	var row *sql.Row
	if d.tx != nil { // the one connection is the event's
		row = d.tx.QueryRowContext(ctx, q)
	} else {
		row = d.db.QueryRowContext(ctx, q)
	}
	err := row.Scan(&seq, &kv)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read the recorded event: %w", err)
	}
	return uint64(seq), kv, nil
}

// Close rolls back an open event and closes the database.
func (d *DB) Close() error {
	d.Rollback()
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("close shard database %s: %w", d.path, err)
	}
	return nil
}
