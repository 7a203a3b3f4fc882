// Package testutil builds the repository's plugins for tests and shares one
// on-disk wazero compilation cache between every test binary, so a Go guest
// is compiled to machine code once per module version rather than once per
// package (that compile takes ~12 s under -race).
package testutil

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/harness"
)

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// CacheDir returns the shared wazero compilation cache for tests:
// $EDGESHARD_TEST_CACHE, or build/test-cache/wazero under the repository.
func CacheDir() string {
	if d := os.Getenv("EDGESHARD_TEST_CACHE"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), "build", "test-cache", "wazero")
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Plugin builds the Go plugin in the package directory pkg (relative to the
// repository root, e.g. "examples/counter") with extra linker flags and
// returns the .wasm path. Builds are cached per test binary and by the Go
// build cache; outputs land in build/test-cache/wasm.
func Plugin(tb testing.TB, pkg string, ldflags ...string) string {
	tb.Helper()
	path, err := BuildPlugin(pkg, ldflags...)
	if err != nil {
		tb.Fatalf("build plugin %s: %v", pkg, err)
	}
	return path
}

// BuildPlugin is Plugin without a testing.TB.
func BuildPlugin(pkg string, ldflags ...string) (string, error) {
	key := pkg + "\x00" + strings.Join(ldflags, " ")
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[key]; ok {
		return p, nil
	}
	sum := sha256.Sum256([]byte(key))
	name := strings.ReplaceAll(strings.Trim(pkg, "/."), "/", "_") + "-" + hex.EncodeToString(sum[:4]) + ".wasm"
	outDir := filepath.Join(RepoRoot(), "build", "test-cache", "wasm")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(outDir, name)
	tmp, err := os.CreateTemp(outDir, name+".*.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	args := []string{"build", "-buildmode=c-shared", "-trimpath"}
	if len(ldflags) > 0 {
		args = append(args, "-ldflags", strings.Join(ldflags, " "))
	}
	args = append(args, "-o", tmp.Name(), "./"+strings.TrimPrefix(pkg, "./"))
	cmd := exec.Command("go", args...)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	// Rename is atomic, so concurrent test binaries never see a partial file.
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	built[key] = out
	return out, nil
}

// Engine returns the wasm engine shared by every host a test binary starts
// (host.Config.Engine), harness.SharedEngine for CacheDir: each plugin
// version is then compiled, or loaded from CacheDir, once per test binary
// instead of once per host. It is never closed; the process's exit
// releases it.
func Engine(tb testing.TB) *host.Engine {
	tb.Helper()
	e, err := harness.SharedEngine(context.Background(), CacheDir())
	if err != nil {
		tb.Fatalf("shared wasm engine: %v", err)
	}
	return e
}

// PluginBytes returns the module Plugin builds.
func PluginBytes(tb testing.TB, pkg string, ldflags ...string) []byte {
	tb.Helper()
	b, err := os.ReadFile(Plugin(tb, pkg, ldflags...))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Mutant builds plugin package pkg with one rule broken on purpose: in its
// file, the text from replaced by to. A test runs a suite against it to
// show the suite catches that rule; made from the plugin's source, the
// mutant keeps up with it. tb fails when from is not in the file. The
// mutated package goes under build/test-cache/_mutants (`./...` skips it).
func Mutant(tb testing.TB, pkg, file, from, to string, ldflags ...string) string {
	tb.Helper()
	srcDir := filepath.Join(RepoRoot(), pkg)
	src, err := os.ReadFile(filepath.Join(srcDir, file))
	if err != nil {
		tb.Fatal(err)
	}
	if !strings.Contains(string(src), from) {
		tb.Fatalf("mutant of %s: %s no longer contains %q", pkg, file, from)
	}
	sum := sha256.Sum256([]byte(pkg + "\x00" + file + "\x00" + from + "\x00" + to))
	rel := filepath.Join("build", "test-cache", "_mutants", hex.EncodeToString(sum[:6]))
	dir := filepath.Join(RepoRoot(), rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	names, err := filepath.Glob(filepath.Join(srcDir, "*.go"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		if filepath.Base(name) == file {
			b = []byte(strings.Replace(string(b), from, to, 1))
		}
		if err := writeAtomic(filepath.Join(dir, filepath.Base(name)), b); err != nil {
			tb.Fatal(err)
		}
	}
	return Plugin(tb, rel, ldflags...)
}

// writeAtomic writes b to path through a rename, so that concurrent test
// binaries never build from a partial file.
func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
