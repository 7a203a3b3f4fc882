package shardsql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Export writes a consistent copy of the database at path to w: SQLite's
// VACUUM INTO a temporary file beside it, streamed, then removed. The copy
// keeps no redo record (it is crash-repair state of this host only), so
// Import elsewhere never replays it. The database may be open meanwhile
// (the copy is one read transaction), but a copy that must match the
// shard's key-value storage is taken while the shard runs no event (a
// stopped host, an evicted or drained shard). A path that does not exist
// reports an error wrapping os.ErrNotExist: the shard has no database.
func Export(ctx context.Context, path string, w io.Writer) error {
	if err := export(ctx, path, w); err != nil {
		return fmt.Errorf("export shard database %s: %w", path, err)
	}
	return nil
}

func export(ctx context.Context, path string, w io.Writer) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	tmp, err := tempName(filepath.Dir(path), ".export-")
	if err != nil {
		return err
	}
	defer removeDB(tmp)
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, "VACUUM INTO ?", tmp)
	db.Close()
	if err != nil {
		return fmt.Errorf("vacuum into a copy: %w", err)
	}
	if err := forgetRedo(ctx, tmp); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// Import replaces the database at path with the SQLite database read from
// r (what Export wrote): it is written to a temporary file beside path,
// checked (PRAGMA integrity_check), its redo record dropped, and renamed
// over path (with path's -wal and -shm removed first). The shard must not
// have the database open: import while the shard is stopped, as its
// key-value storage is restored. Bytes that are not a sound SQLite
// database leave path untouched.
func Import(ctx context.Context, path string, r io.Reader) error {
	if err := importFile(ctx, path, r); err != nil {
		return fmt.Errorf("import shard database %s: %w", path, err)
	}
	return nil
}

func importFile(ctx context.Context, path string, r io.Reader) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := tempName(dir, ".import-")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if !renamed {
			removeDB(tmp)
		}
	}()
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := check(ctx, tmp); err != nil {
		return err
	}
	if err := forgetRedo(ctx, tmp); err != nil {
		return err
	}
	for _, s := range []string{"-wal", "-shm"} {
		if err := os.Remove(path + s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	renamed = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// check refuses a file that is not a sound SQLite database.
func check(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Errorf("not an SQLite database: %w", err)
	}
	if res != "ok" {
		return fmt.Errorf("integrity check failed: %s", res)
	}
	return nil
}

// forgetRedo drops the redo record of the database file at path (creating
// the reserved table if it has none), keeping its sequence number, and
// leaves it in rollback-journal mode with no -wal beside it (WAL is set
// again when the shard opens it).
func forgetRedo(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{schema, "UPDATE _edgeshard_event SET kv = NULL", "PRAGMA journal_mode = DELETE"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("drop the redo record: %w", err)
		}
	}
	return db.Close()
}

// tempName returns an unused file name in dir (the file is not created).
func tempName(dir, prefix string) (string, error) {
	f, err := os.CreateTemp(dir, prefix+"*.db")
	if err != nil {
		return "", err
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return "", err
	}
	return name, nil
}

// removeDB removes a database file and its -wal, -shm and -journal.
func removeDB(path string) {
	for _, s := range []string{"", "-wal", "-shm", "-journal"} {
		_ = os.Remove(path + s)
	}
}
