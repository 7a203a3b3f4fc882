package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/server"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/shardsql"
)

// Backup and restore: `backup` streams a running host's storage through
// the admin API into a file; `restore` loads such a file into the shard
// storage of a stopped host's empty data dir; `export-shard` and
// `import-shard` move one shard through the admin API.

func runBackup(args []string, stdout, stderr io.Writer) int {
	a := newAdminCmd("backup", "usage: edgeshard backup [--admin URL] [--token T] FILE\n\nTakes an online, consistent backup of every shard of a running host (entries\nand alarms as of one commit; the databases of sql = \"shard\" bindings shard by\nshard just after, see docs/OPERATIONS.md) into FILE, which must not exist. The file is\nchecked end to end before it is kept; restore it with `edgeshard restore`.", stderr)
	longTimeout(a.fs)
	c, code := a.start(args, 1)
	if c == nil {
		return code
	}
	file := a.fs.Arg(0)
	bs, n, err := c.download(http.MethodPost, "/admin/backup", file, stderr)
	if err != nil {
		return a.fail(1, err)
	}
	fmt.Fprintf(stdout, "backup %s: %d shards, %d entries, %d alarms, %s; verified\n", file, bs.Shards, bs.Entries, bs.Alarms, size(int(n)))
	return 0
}

// shardCommand is what export-shard and import-shard share: the flags,
// one FILE argument and the admin client. code ≠ 0 means stop with it.
type shardCommand struct {
	name, binding, shard, file string
	c                          *adminClient
}

func parseShardCommand(name, about string, args []string, stderr io.Writer) (cmd shardCommand, code int) {
	a := newAdminCmd(name, fmt.Sprintf("usage: edgeshard %s --binding B --shard S [--admin URL] [--token T] FILE\n\n%s", name, about), stderr)
	binding := a.fs.String("binding", "", "binding of the shard (required)")
	shard := a.fs.String("shard", "", "shard: 0..shards-1, or the object name of a per-name binding (required)")
	longTimeout(a.fs)
	c, code := a.start(args, 1, binding, shard)
	if c == nil {
		return cmd, code
	}
	return shardCommand{name: name, binding: *binding, shard: *shard, file: a.fs.Arg(0), c: c}, 0
}

func (sc shardCommand) path(op string) string {
	return "/admin/bindings/" + url.PathEscape(sc.binding) + "/shards/" + url.PathEscape(sc.shard) + "/" + op
}

func runExportShard(args []string, stdout, stderr io.Writer) int {
	sc, code := parseShardCommand("export-shard", "Writes one shard's snapshot (entries, alarm and its own database, between two of\nits events) into FILE.", args, stderr)
	if code != 0 {
		return code
	}
	bs, n, err := sc.c.download(http.MethodGet, sc.path("export"), sc.file, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard export-shard: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s/%s → %s: %d entries, %d alarm, %s; verified\n", sc.binding, sc.shard, sc.file, bs.Entries, bs.Alarms, size(int(n)))
	return 0
}

func runImportShard(args []string, stdout, stderr io.Writer) int {
	sc, code := parseShardCommand("import-shard", "Loads a one-shard snapshot (export-shard's) into a shard of a running host that\nholds nothing (no entry, no alarm, no database of its own). All or nothing; the shard runs no event meanwhile.", args, stderr)
	if code != 0 {
		return code
	}
	f, err := os.Open(sc.file)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard import-shard: %v\n", err)
		return 1
	}
	defer f.Close()
	var res admin.ImportResult
	if err := sc.c.send(http.MethodPut, sc.path("import"), f, admin.SnapshotContentType, &res); err != nil {
		fmt.Fprintf(stderr, "edgeshard import-shard: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s → %s/%s: %d entries (%s) from %s in %s\n", sc.file, res.Binding, res.Shard, res.Entries, size(int(res.Bytes)), res.From, res.Duration)
	return 0
}

// longTimeout raises the shared --timeout default: a backup takes as long
// as the storage is big.
func longTimeout(fs *flag.FlagSet) {
	f := fs.Lookup("timeout")
	f.Value.Set("24h")
	f.DefValue = "24h0m0s"
}

// download streams a snapshot answer into file (which must not exist),
// checking it as it arrives, with a progress line on stderr. The file
// appears only once the whole stream has been verified.
func (c *adminClient) download(method, path, file string, stderr io.Writer) (storage.BackupStats, int64, error) {
	var bs storage.BackupStats
	if _, err := os.Lstat(file); err == nil {
		return bs, 0, fmt.Errorf("%s exists; remove it or choose another name", file)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	resp, err := c.do(ctx, method, path, nil, "")
	if err != nil {
		return bs, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return bs, 0, answerError(resp)
	}
	tmp := file + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return bs, 0, err
	}
	defer os.Remove(tmp) // a no-op once renamed
	defer f.Close()
	cw := &countWriter{w: f}
	p := newProgress(stderr, func() string {
		return fmt.Sprintf("%d shards, %s received", bs.Shards, size(int(cw.n)))
	})
	bs, err = storage.VerifySnapshot(io.TeeReader(resp.Body, cw), func(s storage.BackupStats) { bs = s; p.tick() })
	p.done()
	if err != nil {
		io.Copy(io.Discard, resp.Body) // to read the trailer
		if msg := resp.Trailer.Get(admin.SnapshotErrorTrailer); msg != "" {
			err = fmt.Errorf("the host failed mid-stream: %s (%w)", msg, err)
		}
		return bs, cw.n, fmt.Errorf("%w; nothing was kept", err)
	}
	if cw.err != nil {
		return bs, cw.n, cw.err
	}
	if err := f.Sync(); err != nil {
		return bs, cw.n, err
	}
	if err := f.Close(); err != nil {
		return bs, cw.n, err
	}
	if err := os.Rename(tmp, file); err != nil {
		return bs, cw.n, err
	}
	return bs, cw.n, syncDir(filepath.Dir(file))
}

func runRestore(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("restore", "usage: edgeshard restore [--config edgeshard.toml] FILE\n\nLoads a backup (edgeshard backup's) into the shard storage of the config's\ndata_dir, and the databases of sql = \"shard\" bindings into data_dir/shardsql,\nwith the host stopped. Refuses when data_dir/shards or data_dir/shardsql holds\nanything. All or nothing: both appear only once the whole file has been loaded.", stderr)
	cfgPath := fs.String("config", "edgeshard.toml", "configuration file: its data_dir and [storage] settings")
	if !parseArgs(fs, args, 1) {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard restore: %v\n", err)
		return 1
	}
	bs, dir, err := restore(cfg, fs.Arg(0), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "restored %s into %s: %d shards, %d entries, %d alarms\n", fs.Arg(0), dir, bs.Shards, bs.Entries, bs.Alarms)
	return 0
}

// ErrDataDirNotEmpty refuses a restore over existing shard storage.
var ErrDataDirNotEmpty = errors.New("the data dir already holds shard storage")

// restore loads file into cfg's data_dir/shards, and its shards'
// databases (section "sql") into data_dir/shardsql, through temporary
// directories beside them, renamed into place only on success.
func restore(cfg *config.File, file string, stderr io.Writer) (storage.BackupStats, string, error) {
	var bs storage.BackupStats
	dir := filepath.Join(cfg.DataDir, "shards")
	sqlDir := filepath.Join(cfg.DataDir, shardsql.Dir)
	for _, d := range []string{dir, sqlDir} {
		if ents, err := os.ReadDir(d); err == nil && len(ents) > 0 {
			return bs, dir, fmt.Errorf("%w: %s is not empty (is the host running?); restore only into an empty data dir, with the host stopped: move %s aside first", ErrDataDirNotEmpty, d, d)
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			return bs, dir, err
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return bs, dir, err
	}
	defer f.Close()
	tmp, sqlTmp := dir+".restoring", sqlDir+".restoring"
	for _, d := range []string{tmp, sqlTmp} {
		if err := os.RemoveAll(d); err != nil { // what a crashed restore left
			return bs, dir, err
		}
	}
	opts := server.BadgerOptions(cfg)
	opts.Dir = tmp // SyncWrites off: Restore syncs once at its end
	b, err := storage.OpenBadger(opts)
	if err != nil {
		return bs, dir, fmt.Errorf("open %s: %w", tmp, err)
	}
	p := newProgress(stderr, func() string { return fmt.Sprintf("%d shards, %d entries restored", bs.Shards, bs.Entries) })
	// Per-shard state outside shard storage: the shards' own databases
	// (sql = "shard"); a section of any other name is refused.
	imp := host.ShardStateImporters([]host.ShardState{host.ShardSQLState(sqlTmp)})
	bs, err = storage.Restore(b, f, imp, func(s storage.BackupStats) { bs = s; p.tick() })
	p.done()
	cerr := b.Close()
	if err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", tmp, cerr)
	}
	if err != nil {
		os.RemoveAll(tmp)
		os.RemoveAll(sqlTmp)
		return bs, dir, fmt.Errorf("%w; nothing was restored", err)
	}
	// The databases first: shard storage in place is what makes the data
	// dir look restored (and the next restore refuse).
	if _, err := os.Stat(sqlTmp); err == nil {
		if err := os.RemoveAll(sqlDir); err != nil { // empty, checked above
			return bs, dir, err
		}
		if err := os.Rename(sqlTmp, sqlDir); err != nil {
			return bs, dir, err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return bs, dir, err
	}
	return bs, dir, syncDir(cfg.DataDir)
}

// progress rewrites one status line on a terminal-ish writer at most every
// half second.
type progress struct {
	w    io.Writer
	line func() string
	last time.Time
	t0   time.Time
	any  bool
}

func newProgress(w io.Writer, line func() string) *progress {
	return &progress{w: w, line: line, t0: time.Now(), last: time.Now()}
}

func (p *progress) tick() {
	if time.Since(p.last) < 500*time.Millisecond {
		return
	}
	p.last, p.any = time.Now(), true
	fmt.Fprintf(p.w, "\r%s (%s)   ", p.line(), time.Since(p.t0).Round(time.Second))
}

func (p *progress) done() {
	if p.any {
		fmt.Fprintln(p.w)
	}
}

// countWriter counts what it writes and keeps the first error, which a
// TeeReader would otherwise report as a read error.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
