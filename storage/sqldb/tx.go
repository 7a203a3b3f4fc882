package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// maxAttempts is how many times a PostgreSQL transaction aborted for a
// serialization failure or a deadlock is run in all before its error is
// returned. Sixteen writers on one row need up to 8 (TestConcurrentWriters).
const maxAttempts = 20

// retryable reports whether PostgreSQL aborted a transaction only because
// a concurrent one won (serialization_failure, deadlock_detected): the
// transaction left nothing behind, and running it again may succeed.
func retryable(err error) bool {
	switch SQLState(err) {
	case "40001", "40P01":
		return true
	}
	return false
}

// retry runs attempt until it succeeds, fails for another reason than
// retryable, maxAttempts ran, or ctx ends; between attempts it waits a
// random 0..2^k ms (k the attempts so far, at most 256 ms) so that the
// transactions that collided do not collide again. It adds the attempts it
// reran to *reran when reran is not nil.
func retry(ctx context.Context, reran *atomic.Int64, attempt func() error) error {
	for k := 1; ; k++ {
		err := attempt()
		if err == nil || !retryable(err) || k == maxAttempts {
			return err
		}
		if reran != nil {
			reran.Add(1)
		}
		wait := time.Duration(rand.Int64N(int64(time.Millisecond) << min(k, 8)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// RunTx runs fn in a transaction of db (a pool DB.SQL returned) and
// commits it unless fn fails. It gives both dialects the same isolation:
// on SQLite the transaction is BEGIN IMMEDIATE (one writer at a time); on
// PostgreSQL it is SERIALIZABLE, and a transaction PostgreSQL aborts for a
// serialization failure or a deadlock is run again, fn included, up to 10
// times. So fn must leave no trace outside tx (or reset what it leaves).
func RunTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	opts := (*sql.TxOptions)(nil)
	pg := isPostgres(db)
	if pg {
		opts = &sql.TxOptions{Isolation: sql.LevelSerializable}
	}
	once := func() error {
		tx, err := db.BeginTx(ctx, opts)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer func() { _ = tx.Rollback() }()
		if err := fn(tx); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	}
	if !pg {
		return once()
	}
	return retry(ctx, nil, once)
}

// Tx is RunTx on the database's pool.
func (d *DB) Tx(ctx context.Context, fn func(*sql.Tx) error) error {
	return RunTx(ctx, d.db, fn)
}

// isPostgres reports whether db is a PostgreSQL pool Open made.
func isPostgres(db *sql.DB) bool {
	_, ok := db.Driver().(pgDriver)
	return ok
}

// Retries returns how many times a batch PostgreSQL aborted for a
// serialization failure or a deadlock was run again since Open (always 0
// on SQLite): how often batches collide.
func (d *DB) Retries() int64 { return d.retries.Load() }
