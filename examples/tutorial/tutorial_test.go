//go:build !wasip1

package main_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/internal/proctest"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// docPath is the tutorial this example is the code of.
const docPath = "docs/WRITING_SHARDS.md"

// The tutorial's fenced blocks follow three conventions:
//
//   - a ```go block whose first line is "// file: NAME" is the whole file
//     NAME (without that line);
//   - a block whose info string has "file=NAME" (```json file=x.json) is the
//     whole file NAME;
//   - a ```sh run block is run, in order, by TestTutorialCommands; other
//     ```sh blocks need a running host or the network and are exercised by
//     the same test in Go.

// fence is one fenced code block of the tutorial.
type fence struct {
	info string // the info string after ```
	body string // the lines between the fences, each ending in \n
	line int    // line of the opening fence
}

func readDoc(t *testing.T) []fence {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), docPath))
	if err != nil {
		t.Fatal(err)
	}
	var out []fence
	var cur *fence
	for i, l := range strings.SplitAfter(string(b), "\n") {
		trimmed := strings.TrimRight(l, "\n")
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			cur = &fence{info: strings.TrimSpace(trimmed[3:]), line: i + 1}
		case cur != nil && trimmed == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.body += l
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: fence never closed", docPath, cur.line)
	}
	return out
}

var fileAttr = regexp.MustCompile(`(?:^|\s)file=(\S+)`)

// file returns the file a fence defines, if any.
func (f fence) file() (name, content string, ok bool) {
	if strings.HasPrefix(f.info, "go") {
		first, rest, _ := strings.Cut(f.body, "\n")
		if name, ok := strings.CutPrefix(first, "// file: "); ok {
			return strings.TrimSpace(name), rest, true
		}
		return "", "", false
	}
	if m := fileAttr.FindStringSubmatch(f.info); m != nil {
		return m[1], f.body, true
	}
	return "", "", false
}

func (f fence) runnable() bool { return f.info == "sh run" }

// TestDocCodeIsTheExample: every file the tutorial shows is byte for byte
// the file of this directory, and every file of this directory (but tests
// and the README) is in the tutorial, so the two never drift apart.
func TestDocCodeIsTheExample(t *testing.T) {
	shown := map[string]bool{}
	for _, f := range readDoc(t) {
		name, content, ok := f.file()
		if !ok {
			continue
		}
		if shown[name] {
			t.Errorf("%s:%d: %s is shown twice", docPath, f.line, name)
		}
		shown[name] = true
		want, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("%s:%d: the tutorial shows %s, which examples/tutorial lacks: %v", docPath, f.line, name, err)
			continue
		}
		if content != string(want) {
			t.Errorf("%s:%d: %s differs from examples/tutorial/%s: %s", docPath, f.line, name, name, firstDiff(content, string(want)))
		}
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == "README.md" || strings.HasSuffix(n, "_test.go") {
			continue
		}
		if !shown[n] {
			t.Errorf("examples/tutorial/%s is not in %s", n, docPath)
		}
	}
	if len(shown) == 0 {
		t.Fatal("the tutorial shows no files")
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d: doc %q, file %q", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("doc has %d lines, file %d", len(g), len(w))
}

// TestConformance runs the tutorial's suite on the real host's storage
// (Badger and a SQLite file), on the in-memory backend, and with its SQL
// on PostgreSQL: the same module.
func TestConformance(t *testing.T) {
	wasm := testutil.Plugin(t, "examples/tutorial")
	for _, backend := range []string{conformance.BackendBadger, conformance.BackendMemory, "postgres"} {
		t.Run(backend, func(t *testing.T) {
			o := conformance.Options{Backend: backend, CacheDir: testutil.CacheDir()}
			if backend == "postgres" {
				o.Backend, o.SQLURL = conformance.BackendMemory, pgtest.DB(t)
			}
			conformance.Run(t, wasm, "conformance.json", o)
		})
	}
}

// TestTutorialCommands follows the tutorial in an empty directory: it runs
// every ```sh run block with bash and writes every file block where the
// reader would, with the edgeshard binary on PATH and EDGESHARD_SDK set as
// section 1 says (offline: the SDK is the only requirement). Then it does
// what sections 8 and 9 do: serve the result with its edgeshard.toml, send
// the requests of the curl block and compare the answers with the ones the
// tutorial shows, push a new build, look at the status, roll back.
func TestTutorialCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the edgeshard binary")
	}
	root := testutil.RepoRoot()
	bin := proctest.Binary(t)
	gocache, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"EDGESHARD_SDK="+root,
		"GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off",
		"GOCACHE="+strings.TrimSpace(string(gocache)),
		// edgeshard validate and conformance keep compiled modules in the
		// user cache directory: share one between test runs.
		"XDG_CACHE_HOME="+filepath.Join(root, "build", "test-cache", "xdg"),
	)

	fences := readDoc(t)
	cwd := t.TempDir()
	ran := 0
	for _, f := range fences {
		if name, content, ok := f.file(); ok {
			if err := os.WriteFile(filepath.Join(cwd, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !f.runnable() {
			continue
		}
		ran++
		pwdFile := filepath.Join(t.TempDir(), "pwd")
		cmd := exec.Command("bash", "-e", "-c", f.body+"\npwd > "+pwdFile)
		cmd.Dir, cmd.Env = cwd, env
		out, err := cmd.CombinedOutput()
		t.Logf("%s:%d:\n%s%s", docPath, f.line, f.body, out)
		if err != nil {
			t.Fatalf("%s:%d: the block failed: %v\n%s", docPath, f.line, err, out)
		}
		b, err := os.ReadFile(pwdFile)
		if err != nil {
			t.Fatal(err)
		}
		cwd = strings.TrimSpace(string(b))
	}
	if ran < 3 {
		t.Fatalf("only %d runnable blocks in %s", ran, docPath)
	}
	project := cwd
	for _, f := range []string{"pageviews.wasm", "edgeshard.toml", "conformance.json", "go.mod"} {
		if _, err := os.Stat(filepath.Join(project, f)); err != nil {
			t.Fatalf("after the tutorial's commands: %v", err)
		}
	}

	// Section 8: serve it. Env overrides move the listeners to free ports
	// and make the flush quick.
	addr, adminAddr := proctest.FreeAddr(t), proctest.FreeAddr(t)
	const token = "tutorial-token"
	hostEnv := append(slices.Clone(env),
		"EDGESHARD_LISTEN="+addr, "EDGESHARD_ADMIN_LISTEN="+adminAddr, "EDGESHARD_ADMIN_TOKEN="+token,
		"EDGESHARD_CACHE_DIR="+testutil.CacheDir(), "FLUSH_EVERY=1s")
	srv := startServe(t, bin, project, hostEnv, addr)

	curls := 0
	for _, f := range fences {
		if f.info != "sh" || !strings.Contains(f.body, "curl ") {
			continue
		}
		for _, l := range strings.Split(strings.TrimSpace(f.body), "\n") {
			switch {
			case strings.HasPrefix(l, "sleep "):
				time.Sleep(2 * time.Second) // FLUSH_EVERY=1s
			case strings.HasPrefix(l, "curl "):
				curls++
				method, url, want := parseCurl(t, l, addr)
				if got := request(t, method, url); got != want {
					t.Fatalf("%s\n  got  %s\n  want %s\nhost log:\n%s", l, got, want, srv.out)
				}
			}
		}
	}
	if curls < 5 {
		t.Fatalf("found %d curl commands in %s", curls, docPath)
	}

	// Section 9: push a new build (-trimpath changes the bytes), look at
	// the status, roll back. Storage outlives versions.
	doc, _ := os.ReadFile(filepath.Join(root, docPath))
	for _, cmd := range []string{"edgeshard push --binding PAGEVIEWS pageviews.wasm", "edgeshard status", "edgeshard rollback --binding PAGEVIEWS", "edgeshard serve --config edgeshard.toml --dev --watch"} {
		if !bytes.Contains(doc, []byte(cmd)) {
			t.Fatalf("the tutorial no longer says %q; update this test", cmd)
		}
	}
	build := exec.Command("go", "build", "-trimpath", "-buildmode=c-shared", "-o", "pageviews.wasm", ".")
	build.Dir, build.Env = project, append(slices.Clone(env), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	admin := "--admin=http://" + adminAddr
	edgeshard(t, bin, project, hostEnv, "PAGEVIEWS: now serving", "push", admin, "--binding", "PAGEVIEWS", "pageviews.wasm")
	edgeshard(t, bin, project, hostEnv, "PAGEVIEWS", "status", admin)
	if got := request(t, "POST", "http://"+addr+"/do/PAGEVIEWS/home/view"); got != `{"page":"home","views":3}` {
		t.Fatalf("a view after the push: %s", got)
	}
	edgeshard(t, bin, project, hostEnv, "PAGEVIEWS: rolled back", "rollback", admin, "--binding", "PAGEVIEWS")

	// Stop it as Ctrl-C would; the flush reached SQL and analytics.
	time.Sleep(2 * time.Second)
	srv.stop(t)
	if n := count(t, filepath.Join(project, "data", "pageviews.db"), "SELECT views FROM page_views WHERE page = 'home'"); n != 3 {
		t.Fatalf("page_views has %d views for home, want 3", n)
	}
	if n := count(t, filepath.Join(project, "data", "analytics.db"), "SELECT COUNT(*) FROM analytics_events WHERE dataset = 'pageviews'"); n < 2 {
		t.Fatalf("%d analytics points, want at least 2", n)
	}
}

var curlLine = regexp.MustCompile(`^curl -s (-X (\w+) )?localhost:8787(/\S*)\s+# (.+)$`)

// parseCurl reads `curl -s [-X M] localhost:8787/PATH   # ANSWER`.
func parseCurl(t *testing.T, l, addr string) (method, url, want string) {
	t.Helper()
	m := curlLine.FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("cannot read the curl command %q (want: curl -s [-X METHOD] localhost:8787/PATH  # ANSWER)", l)
	}
	method = m[2]
	if method == "" {
		method = "GET"
	}
	return method, "http://" + addr + m[3], strings.TrimSpace(m[4])
}

func request(t *testing.T, method, url string) string {
	t.Helper()
	_, b := testutil.Do(t, method, url, "")
	return strings.TrimSpace(b)
}

// edgeshard runs the CLI and wants its output to contain want.
func edgeshard(t *testing.T, bin, dir string, env []string, want string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	t.Logf("edgeshard %s:\n%s", strings.Join(args, " "), out)
	if err != nil || !bytes.Contains(out, []byte(want)) {
		t.Fatalf("edgeshard %s: %v, output lacks %q:\n%s", strings.Join(args, " "), err, want, out)
	}
}

func count(t *testing.T, file, query string) int {
	t.Helper()
	db, err := sqldb.Open(sqldb.Scheme+file, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.SQL().QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// server is `edgeshard serve` running in a test.
type server struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan error
	exited bool // stop saw the process exit
}

func startServe(t *testing.T, bin, dir string, env []string, addr string) *server {
	t.Helper()
	s := &server{out: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(bin, "serve", "--config", "edgeshard.toml")
	s.cmd.Dir, s.cmd.Env = dir, env
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if !s.exited {
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		select {
		case err := <-s.done:
			s.exited = true
			t.Fatalf("edgeshard serve exited: %v\n%s", err, s.out)
		default:
		}
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("edgeshard serve not ready:\n%s", s.out)
	return nil
}

// stop sends SIGINT, as Ctrl-C does, and wants a clean exit.
func (s *server) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-s.done:
		s.exited = true
		if err != nil {
			t.Fatalf("edgeshard serve after Ctrl-C: %v\n%s", err, s.out)
		}
	case <-time.After(time.Minute):
		t.Fatalf("edgeshard serve did not stop:\n%s", s.out)
	}
}

// syncBuffer collects a process's output.
type syncBuffer = testutil.LogBuffer
