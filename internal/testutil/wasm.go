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
