package main_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/proctest"
)

// cli runs the edgeshard binary in dir ("": the test's) with the admin
// token in its environment.
func cli(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(proctest.Binary(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "EDGESHARD_ADMIN_TOKEN="+adminToken)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func increment(t *testing.T, p *proctest.Proc, name string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if st, body := post(t, p.URL()+"/do/COUNTER/"+name+"/increment"); st != 200 {
			t.Fatalf("increment %s: %d %s", name, st, body)
		}
	}
}

// TestBackupWipeRestore takes a backup of a running host with the CLI,
// stops it, wipes its data dir, restores the file and restarts: every
// counter answers as before through /do, and the alarm set before the
// backup still fires. A second restore over the restored data, and a
// restore of a damaged file, are refused and change nothing.
func TestBackupWipeRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dir := t.TempDir()
	adminAddr := proctest.FreeAddr(t)
	p := proctest.Start(t, dir, adminConfigText(t, adminAddr), "EDGESHARD_ADMIN_TOKEN="+adminToken)
	want := map[string]int{"n0": 3, "n1": 7, "name with spaces": 2, "ünïcode": 1}
	for name, n := range want {
		increment(t, p, name, n)
	}
	armAlarmReset(t, p, 10_000) // "alarm" counts 1 until its alarm fires

	file := filepath.Join(t.TempDir(), "host.backup")
	out, errs, code := cli(t, "", "backup", "--admin", "http://"+adminAddr, file)
	if code != 0 {
		t.Fatalf("backup exited %d: %s\n%s", code, errs, p.Output())
	}
	if !strings.Contains(out, "5 shards") || !strings.Contains(out, "1 alarms") || !strings.Contains(out, "verified") {
		t.Fatalf("backup said %q; want 5 shards, 1 alarm, verified", out)
	}
	if _, _, code := cli(t, "", "backup", "--admin", "http://"+adminAddr, file); code == 0 {
		t.Fatal("a backup over an existing file succeeded")
	}
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}

	damaged, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	damaged[len(damaged)/2] ^= 0x40
	bad := filepath.Join(t.TempDir(), "damaged.backup")
	if err := os.WriteFile(bad, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	_, errs, code = cli(t, dir, "restore", "--config", p.Config, bad)
	if code == 0 || !strings.Contains(errs, "corrupt") || !strings.Contains(errs, "nothing was restored") {
		t.Fatalf("restore of a damaged file: exit %d, %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "shards")); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left shard storage behind (%v)", err)
	}

	out, errs, code = cli(t, dir, "restore", "--config", p.Config, file)
	if code != 0 || !strings.Contains(out, "5 shards") {
		t.Fatalf("restore exited %d: %q %q", code, out, errs)
	}
	_, errs, code = cli(t, dir, "restore", "--config", p.Config, file)
	if code == 0 || !strings.Contains(errs, "not empty") {
		t.Fatalf("restore over restored data: exit %d, %q; want a refusal", code, errs)
	}

	p.Restart()
	for name, n := range want {
		if got := countOf(t, p.URL()+"/do/COUNTER/"+url.PathEscape(name)+"/"); got != n {
			t.Fatalf("%s after restore: %d; want %d", name, got, n)
		}
	}
	waitAlarmReset(t, p, 30*time.Second, "the alarm restored from the backup did not fire")
}

// TestBackupUnderLoadIsConsistent: pairs of clients increment counter A,
// then, once that is acknowledged, counter B, in a loop, while a backup is
// taken. A backup read shard by shard at different moments could catch B
// ahead of A; one read as of one commit always finds A = B or A = B+1,
// and holds at least every increment acknowledged before it began. The
// backup is checked by restoring it on a second host and asking /do.
func TestBackupUnderLoadIsConsistent(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	adminAddr := proctest.FreeAddr(t)
	p := proctest.Start(t, t.TempDir(), adminConfigText(t, adminAddr), "EDGESHARD_ADMIN_TOKEN="+adminToken)
	const pairs = 6
	var acked [pairs]atomic.Int64 // completed A-then-B rounds
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: pairs}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	inc := func(name string) error {
		resp, err := client.Post(p.URL()+"/do/COUNTER/"+name+"/increment", "text/plain", nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: status %d", name, resp.StatusCode)
		}
		return nil
	}
	errc := make(chan error, pairs)
	for w := 0; w < pairs; w++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := inc(fmt.Sprintf("a%d", w)); err != nil {
					errc <- err
					return
				}
				if err := inc(fmt.Sprintf("b%d", w)); err != nil {
					errc <- err
					return
				}
				acked[w].Add(1)
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	var before [pairs]int64
	for w := range before {
		before[w] = acked[w].Load()
	}
	file := filepath.Join(t.TempDir(), "load.backup")
	_, errs, code := cli(t, "", "backup", "--admin", "http://"+adminAddr, file)
	time.Sleep(200 * time.Millisecond) // load after the backup too
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("load: %v", err)
	}
	if code != 0 {
		t.Fatalf("backup under load exited %d: %s", code, errs)
	}
	total := int64(0)
	for w := range acked {
		total += acked[w].Load()
	}
	t.Logf("%d rounds acknowledged during the test", total)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "restore.toml")
	if err := os.WriteFile(cfgPath, []byte(strings.ReplaceAll(adminConfigText(t, proctest.FreeAddr(t)), "{{LISTEN}}", proctest.FreeAddr(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := cli(t, dir, "restore", "--config", cfgPath, file); code != 0 {
		t.Fatalf("restore: exit %d %s %s", code, out, errs)
	}
	q := proctest.Start(t, dir, adminConfigText(t, proctest.FreeAddr(t)), "EDGESHARD_ADMIN_TOKEN="+adminToken)
	for w := 0; w < pairs; w++ {
		a := countOf(t, q.URL()+fmt.Sprintf("/do/COUNTER/a%d/", w))
		b := countOf(t, q.URL()+fmt.Sprintf("/do/COUNTER/b%d/", w))
		if a != b && a != b+1 {
			t.Fatalf("pair %d in the backup: a=%d b=%d; a torn view (want a = b or b+1)", w, a, b)
		}
		if int64(b) < before[w] {
			t.Fatalf("pair %d: backup has b=%d, but %d rounds were acknowledged before it began", w, b, before[w])
		}
		if int64(a) > acked[w].Load()+1 {
			t.Fatalf("pair %d: backup has a=%d, more than was ever done (%d)", w, a, acked[w].Load())
		}
	}
}

// TestShardExportImportCLI moves one counter with export-shard and
// import-shard between two running hosts; importing again is refused
// (the shard is no longer empty), and so is a damaged file.
func TestShardExportImportCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	srcAdmin, dstAdmin := proctest.FreeAddr(t), proctest.FreeAddr(t)
	src := proctest.Start(t, t.TempDir(), adminConfigText(t, srcAdmin), "EDGESHARD_ADMIN_TOKEN="+adminToken)
	dst := proctest.Start(t, t.TempDir(), adminConfigText(t, dstAdmin), "EDGESHARD_ADMIN_TOKEN="+adminToken)
	increment(t, src, "moved", 4)
	file := filepath.Join(t.TempDir(), "moved.snapshot")
	out, errs, code := cli(t, "", "export-shard", "--admin", "http://"+srcAdmin, "--binding", "COUNTER", "--shard", "moved", file)
	if code != 0 || !strings.Contains(out, "verified") {
		t.Fatalf("export-shard: exit %d %q %q", code, out, errs)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "cut.snapshot")
	os.WriteFile(bad, data[:len(data)-5], 0o600)
	_, errs, code = cli(t, "", "import-shard", "--admin", "http://"+dstAdmin, "--binding", "COUNTER", "--shard", "moved", bad)
	if code == 0 || !strings.Contains(errs, "snapshot_corrupt") {
		t.Fatalf("import of a cut file: exit %d %q", code, errs)
	}
	out, errs, code = cli(t, "", "import-shard", "--admin", "http://"+dstAdmin, "--binding", "COUNTER", "--shard", "moved", file)
	if code != 0 || !strings.Contains(out, "from COUNTER/moved") {
		t.Fatalf("import-shard: exit %d %q %q", code, out, errs)
	}
	if got := countOf(t, dst.URL()+"/do/COUNTER/moved/"); got != 4 {
		t.Fatalf("moved counter on the target: %d; want 4", got)
	}
	_, errs, code = cli(t, "", "import-shard", "--admin", "http://"+dstAdmin, "--binding", "COUNTER", "--shard", "moved", file)
	if code == 0 || !strings.Contains(errs, "shard_not_empty") {
		t.Fatalf("second import: exit %d %q", code, errs)
	}
}

// TestMigrationRenameThroughConfig: the real binary applies a
// [[migrations]] rename from edgeshard.toml: the counter answers under
// the new binding name, and the log says what happened.
func TestMigrationRenameThroughConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	p := proctest.Start(t, t.TempDir(), counterConfigText(t, "v1"))
	increment(t, p, "kept", 3)
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	renamed := strings.Replace(string(cfg), `name = "COUNTER"`, `name = "COUNTERS"`, 1) + `
[[migrations]]
tag = "rename-counter"
renamed_bindings = [{ from = "COUNTER", to = "COUNTERS" }]
`
	if err := os.WriteFile(p.Config, []byte(renamed), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Restart()
	if got := countOf(t, p.URL()+"/do/COUNTERS/kept/"); got != 3 {
		t.Fatalf("COUNTERS/kept after the rename: %d; want 3\n%s", got, p.Output())
	}
	if !strings.Contains(p.Output(), "migration applied and recorded") {
		t.Fatalf("no migration log line:\n%s", p.Output())
	}
}
