package sqldb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrNotWritable is matched by Writable's error: the database would not
// take a write now.
var ErrNotWritable = errors.New("sql database does not accept writes")

// Writable reports whether the database accepts writes now, for readiness:
// its file is still where it was opened (a database deleted under a running
// host keeps taking writes into the deleted file, lost at the next start),
// and a write transaction can begin — not locked by another writer past
// ctx, not read-only. It writes nothing.
func (d *DB) Writable(ctx context.Context) error {
	if d.path != "" && d.path != memoryPath {
		if _, err := os.Stat(d.path); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: its file %s is gone", ErrNotWritable, d.path)
		}
	}
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotWritable, err)
	}
	defer conn.Close()
	begin := "BEGIN"
	if !isPostgres(d.db) {
		// BEGIN IMMEDIATE takes SQLite's write lock (SQLITE_BUSY while
		// another writer holds it).
		begin = "BEGIN IMMEDIATE"
	}
	if _, err := conn.ExecContext(ctx, begin); err != nil {
		return fmt.Errorf("%w: %v", ErrNotWritable, err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	// A schema write is refused by a read-only database (or a PostgreSQL
	// standby); ROLLBACK leaves nothing.
	if _, err := conn.ExecContext(ctx, "CREATE TABLE edgeshard_write_probe (x INTEGER)"); err != nil {
		return fmt.Errorf("%w: %v", ErrNotWritable, err)
	}
	return nil
}
