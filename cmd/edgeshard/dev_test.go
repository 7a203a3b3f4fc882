package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestDevRebuildsSwapsAndReruns runs `edgeshard dev` in-process in a
// project made by `edgeshard new` for one rebuild cycle: the first build
// serves and passes the suite; an edit of main.go is rebuilt, swapped into
// the running host (the next request sees the new code) and the suite
// reruns — each announced by one line. Bounded at four minutes.
func TestDevRebuildsSwapsAndReruns(t *testing.T) {
	root := testutil.RepoRoot()
	parent := t.TempDir()
	dir := filepath.Join(parent, "devshard")
	if code, _, stderr := cli("new", "devshard", "--dir", parent, "--sdk", root); code != 0 {
		t.Fatalf("edgeshard new: exit %d: %s", code, stderr)
	}
	goCmd(t, dir, []string{"GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off"}, "mod", "tidy")
	t.Chdir(dir)
	t.Setenv("EDGESHARD_CACHE_DIR", testutil.CacheDir()) // the tests' shared compilation cache
	t.Setenv("GOFLAGS", "-mod=mod")
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOWORK", "off")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out, logs testutil.LogBuffer
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- dev(ctx, devOptions{Config: "edgeshard.toml", Suite: "conformance.json", Backend: "memory",
			Listen: "127.0.0.1:0", LogLevel: "info", Interval: 50 * time.Millisecond}, &out, &logs)
	}()
	// waitLine waits for the n-th line of dev's output and matches it.
	waitLine := func(n int, re *regexp.Regexp) []string {
		t.Helper()
		for {
			if lines := out.Lines(); len(lines) >= n {
				m := re.FindStringSubmatch(lines[n-1])
				if m == nil {
					t.Fatalf("dev line %d = %q, want %s\nall output:\n%s\nhost log:\n%s", n, lines[n-1], re, out.String(), logs.String())
				}
				return m
			}
			select {
			case err := <-done:
				t.Fatalf("dev returned %v before line %d:\n%s\nhost log:\n%s", err, n, out.String(), logs.String())
			case <-ctx.Done():
				t.Fatalf("no line %d from dev after %v:\n%s\nhost log:\n%s", n, time.Since(start), out.String(), logs.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}

	first := waitLine(1, regexp.MustCompile(`^built in \S+, serving ([0-9a-f]{12}) at (http://127\.0\.0\.1:\d+)/do/DEVSHARD/\{name\}/, conformance 6 passed 0 failed$`))
	t.Logf("%v: %s", time.Since(start).Round(time.Millisecond), out.Lines()[0])
	base := first[2]
	if got := get(t, "POST", base+"/do/DEVSHARD/alice/hit"); got != `{"hits":1}` {
		t.Fatalf("first version: %s", got)
	}

	// An edit: the reply gains a field. The suite matches JSON subsets, so
	// it still passes; the served answer shows the swap.
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(src), "[]byte(`{\"hits\":`)", "[]byte(`{\"v\":2,\"hits\":`)", 1)
	if edited == string(src) {
		t.Fatal("main.go has no reply to edit")
	}
	if err := os.WriteFile("main.go", []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Second) // a new mtime even on coarse clocks
	os.Chtimes("main.go", later, later)
	edit := time.Now()

	second := waitLine(2, regexp.MustCompile(`^rebuilt in (\S+), swapped to ([0-9a-f]{12}), conformance 6 passed 0 failed$`))
	t.Logf("%v after the edit: %s", time.Since(edit).Round(time.Millisecond), out.Lines()[1])
	if second[2] == first[1] {
		t.Fatalf("swapped to the version already serving: %s", second[2])
	}
	if got := get(t, "POST", base+"/do/DEVSHARD/alice/hit"); got != `{"v":2,"hits":2}` {
		t.Fatalf("after the swap: %s, want the new code on the old storage", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("dev did not stop within a minute of its context")
	}
	if len(out.Lines()) != 2 {
		t.Fatalf("dev printed more than one line per build:\n%s", out.String())
	}
}

// TestDevPicksTheBinding: dev builds the config's only binding, or the one
// --binding names, and explains when it cannot tell.
func TestDevPicksTheBinding(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	write := func(toml string) {
		if err := os.WriteFile("edgeshard.toml", []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	two := "data_dir = \"./data\"\n[[durable_objects.bindings]]\nname = \"A\"\nmodule = \"a.wasm\"\n[[durable_objects.bindings]]\nname = \"B\"\nmodule = \"b.wasm\"\n[edge]\nenabled = false\n"
	write(two)
	for _, tc := range []struct {
		binding, want string
	}{
		{"", "several bindings (A, B): say which one this project builds with --binding"},
		{"C", "--binding C: edgeshard.toml has A, B"},
	} {
		err := dev(context.Background(), devOptions{Config: "edgeshard.toml", Binding: tc.binding, Interval: time.Millisecond}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--binding %q: %v, want %q", tc.binding, err, tc.want)
		}
	}
	if code, _, stderr := cli("dev", "--backend", "disk"); code != 2 || !strings.Contains(stderr, `--backend "disk"`) {
		t.Errorf("dev --backend disk: %d %s", code, stderr)
	}
}

// get sends a request without a body and returns the answer's body.
func get(t *testing.T, method, url string) string {
	t.Helper()
	_, b := send(t, method, url)
	return string(b)
}

// send sends a request without a body and returns the answer's status and
// body; a request that gets no answer fails the test.
func send(t *testing.T, method, url string) (int, []byte) {
	t.Helper()
	st, b := testutil.Do(t, method, url, "")
	return st, []byte(b)
}
