package sqldb

import (
	"context"
	"fmt"
	"time"
)

// TryLock takes the session-level advisory lock key (PostgreSQL's
// pg_try_advisory_lock) on a connection of its own, without waiting: ok is
// false when another session — another host — holds it. While held, the
// connection stays out of the pool; release unlocks it and gives it back
// (or, if the unlock fails, drops it, which unlocks too). A host that dies
// holding the lock loses it with its session. Jobs that must run on one
// host of a fleet at a time take it (the edge's reconcileCounters).
//
// On SQLite there is no lock to take: ok is true and release does nothing
// (the database is one file that one writer at a time may change; a job
// that must not overlap itself within a process serialises itself).
func (d *DB) TryLock(ctx context.Context, key int64) (release func(), ok bool, err error) {
	if d.dialect != DialectPostgres {
		return func() {}, true, nil
	}
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("advisory lock %d: %w", key, err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock(?)", key).Scan(&ok); err != nil {
		dropConn(conn)
		conn.Close()
		return nil, false, fmt.Errorf("advisory lock %d: %w", key, err)
	}
	if !ok {
		conn.Close()
		return nil, false, nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var released bool
		if err := conn.QueryRowContext(ctx, "SELECT pg_advisory_unlock(?)", key).Scan(&released); err != nil || !released {
			dropConn(conn)
		}
		conn.Close()
	}, true, nil
}
