package main

import (
	"bytes"
	"encoding/json"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// cli runs the edgeshard command line in-process.
func cli(args ...string) (int, string, string) {
	var out, errb strings.Builder
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// goCmd runs the go tool in dir with extra environment and fails the test
// on error.
func goCmd(t *testing.T, dir string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestNewProjectBuildsPassesAndServes scaffolds a project the way its README
// says, then — without changing a byte of it — tidies it offline, builds the
// wasm with the Makefile's command, runs its own conformance suite, and
// serves it with `edgeshard serve` on its own edgeshard.toml.
func TestNewProjectBuildsPassesAndServes(t *testing.T) {
	root := testutil.RepoRoot()
	parent := t.TempDir()
	dir := filepath.Join(parent, "hits-demo")
	code, out, stderr := cli("new", "hits-demo", "--dir", parent, "--sdk", root)
	if code != 0 {
		t.Fatalf("edgeshard new: exit %d: %s", code, stderr)
	}
	t.Logf("edgeshard new:\n%s", out)
	for _, f := range []string{"go.mod", "go.sum", "main.go", "conformance.json", "conformance_test.go", "Makefile", "README.md", "edgeshard.toml", ".gitignore"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("scaffold lacks %s: %v", f, err)
		}
	}
	gomod := read(t, dir, "go.mod")
	for _, want := range []string{"module hits-demo\n", "require github.com/edgeshard/edgeshard v0.0.0\n", "replace github.com/edgeshard/edgeshard => " + filepath.ToSlash(root) + "\n"} {
		if !strings.Contains(gomod, want) {
			t.Fatalf("go.mod lacks %q:\n%s", want, gomod)
		}
	}
	for _, f := range []string{"main.go", "conformance_test.go"} {
		src := []byte(read(t, dir, f))
		if formatted, err := format.Source(src); err != nil || !bytes.Equal(formatted, src) {
			t.Fatalf("%s is not gofmt-clean (%v)", f, err)
		}
	}
	if !strings.Contains(out, "go install ./cmd/edgeshard") && !strings.Contains(out, "edgeshard dev") {
		t.Fatalf("edgeshard new does not say how to get the binary or develop:\n%s", out)
	}
	if readme := read(t, dir, "README.md"); !strings.Contains(readme, "(cd "+root+" && go install ./cmd/edgeshard)") || !strings.Contains(readme, "edgeshard dev") {
		t.Fatalf("README.md lacks how to get the edgeshard binary or edgeshard dev:\n%s", readme)
	}
	if toml := read(t, dir, "edgeshard.toml"); !strings.Contains(toml, "# sql = \"DB\"") || !strings.Contains(toml, "# [[d1_databases]]") {
		t.Fatalf("edgeshard.toml lacks the commented SQL binding:\n%s", toml)
	}
	const build = "GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o hits-demo.wasm ."
	if mk := read(t, dir, "Makefile"); !strings.Contains(mk, "\t"+build+"\n") || !strings.Contains(mk, "conformance --plugin hits-demo.wasm --suite conformance.json\n") ||
		!strings.Contains(mk, "conformance --plugin hits-demo.wasm --suite conformance.json --backend badger\n") || !strings.Contains(mk, "\t$(EDGESHARD) dev\n") {
		t.Fatalf("Makefile lacks the build, test, test-badger or dev recipe:\n%s", mk)
	}

	// Offline: the only requirement is the replaced SDK.
	offline := []string{"GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off"}
	goCmd(t, dir, offline, "mod", "tidy")
	goCmd(t, dir, append(offline, "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"), "build", "-buildmode=c-shared", "-o", "hits-demo.wasm", ".")
	wasm := filepath.Join(dir, "hits-demo.wasm")

	suite, err := conformance.LoadSuite(filepath.Join(dir, "conformance.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, backend := range []string{conformance.BackendMemory, conformance.BackendBadger} {
		rep := conformance.RunSuite(t.Context(), wasm, suite, conformance.Options{CacheDir: testutil.CacheDir(), Backend: backend})
		if rep.Failed != 0 || rep.Err != nil || rep.Passed != len(suite.Scenarios) {
			t.Fatalf("the scaffold's suite on %s:\n%s", backend, rep)
		}
	}
	// Its own Go test runs the same suite through conformance.Run.
	goCmd(t, dir, offline, "test", "-count=1", "./...")

	// Serve it from its directory with its own config, as `make serve` does.
	t.Chdir(dir)
	cfg, err := config.Load("edgeshard.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.AdminToken, cfg.CacheDir = "127.0.0.1:0", "", testutil.CacheDir()
	addr := serveUntilEnd(t, cfg)
	for i, want := range []int{1, 2} {
		if got := hits(t, "POST", "http://"+addr+"/do/HITS_DEMO/alice/hit"); got != want {
			t.Fatalf("hit %d: hits = %d, want %d", i+1, got, want)
		}
	}
	if got := hits(t, "GET", "http://"+addr+"/do/HITS_DEMO/alice/"); got != 2 {
		t.Fatalf("GET: hits = %d, want 2", got)
	}
}

func read(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func hits(t *testing.T, method, url string) int {
	t.Helper()
	status, body := send(t, method, url)
	var r struct {
		Hits *int `json:"hits"`
	}
	if status != 200 || json.Unmarshal(body, &r) != nil || r.Hits == nil {
		t.Fatalf("%s %s: %d %s", method, url, status, body)
	}
	return *r.Hits
}

// TestNewFindsTheSDK checks where `edgeshard new` looks for the SDK: the
// flag, then EDGESHARD_SDK, then the checkout around the current
// directory, and that it explains --sdk when there is none.
func TestNewFindsTheSDK(t *testing.T) {
	root := testutil.RepoRoot()
	replaceLine := func(dir string) string {
		for _, l := range strings.Split(read(t, dir, "go.mod"), "\n") {
			if strings.HasPrefix(l, "replace ") {
				return l
			}
		}
		t.Fatalf("no replace directive in %s/go.mod", dir)
		return ""
	}
	want := "replace github.com/edgeshard/edgeshard => " + filepath.ToSlash(root)

	// Inside the checkout: found by walking up.
	t.Setenv("EDGESHARD_SDK", "")
	t.Chdir(filepath.Join(root, "examples", "counter"))
	parent := t.TempDir()
	dir := filepath.Join(parent, "a")
	if code, _, stderr := cli("new", "a", "--dir", parent); code != 0 {
		t.Fatalf("new inside the checkout: %d %s", code, stderr)
	}
	if got := replaceLine(dir); got != want {
		t.Fatalf("walk-up: %q, want %q", got, want)
	}

	// Outside it: EDGESHARD_SDK, else an error naming --sdk.
	outside := t.TempDir()
	t.Chdir(outside)
	if code, _, stderr := cli("new", "b"); code != 1 || !strings.Contains(stderr, "--sdk") || !strings.Contains(stderr, "EDGESHARD_SDK") {
		t.Fatalf("new without an SDK: %d %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(outside, "b")); err == nil {
		t.Fatal("a failed new left a directory behind")
	}
	t.Setenv("EDGESHARD_SDK", root)
	if code, _, stderr := cli("new", "b"); code != 0 {
		t.Fatalf("new with EDGESHARD_SDK: %d %s", code, stderr)
	}
	if got := replaceLine(filepath.Join(outside, "b")); got != want {
		t.Fatalf("EDGESHARD_SDK: %q, want %q", got, want)
	}

	// --sdk must be an edgeshard checkout.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n\ngo 1.26.0\n"), 0o644)
	if code, _, stderr := cli("new", "c", "--sdk", other); code != 1 || !strings.Contains(stderr, `"example.com/other"`) {
		t.Fatalf("new with a foreign --sdk: %d %q", code, stderr)
	}
}

// TestNewRefusesBadInput: names that cannot be a module and file name, a
// directory that already has files, missing arguments.
func TestNewRefusesBadInput(t *testing.T) {
	root := testutil.RepoRoot()
	for _, name := range []string{"", "1abc", "my shard", "a/b", "../x", "-flag", strings.Repeat("a", 65)} {
		if code, _, _ := cli("new", name, "--sdk", root, "--dir", t.TempDir()); code != 2 {
			t.Errorf("new %q: exit %d, want 2", name, code)
		}
	}
	if code, _, _ := cli("new", "--sdk", root); code != 2 {
		t.Error("new without a name accepted")
	}
	if code, _, _ := cli("new", "a", "b", "--sdk", root); code != 2 {
		t.Error("new with two names accepted")
	}
	parent := t.TempDir()
	os.Mkdir(filepath.Join(parent, "a"), 0o755)
	os.WriteFile(filepath.Join(parent, "a", "keep.txt"), []byte("mine"), 0o644)
	if code, _, stderr := cli("new", "a", "--dir", parent, "--sdk", root); code != 1 || !strings.Contains(stderr, "not empty") {
		t.Fatalf("new into a non-empty directory: %d %q", code, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(parent, "a", "keep.txt")); string(b) != "mine" {
		t.Fatal("new touched an existing file")
	}
	// An existing empty directory is fine.
	os.Mkdir(filepath.Join(parent, "b"), 0o755)
	if code, _, stderr := cli("new", "b", "--dir", parent, "--sdk", root); code != 0 {
		t.Fatalf("new into an empty directory: %d %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(parent, "b", "main.go")); err != nil {
		t.Fatal(err)
	}
}
