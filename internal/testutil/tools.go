package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Tools other than Go that build the repository's non-Go examples, and
// the Debian packages that provide them (scripts/deps.sh installs them).
const (
	// CInstallHint installs clang for wasm32-wasi: the compiler, its
	// linker, the wasm32 builtins it always links and wasi-libc.
	CInstallHint = "apt-get install -y clang lld libclang-rt-dev-wasm32 wasi-libc (or run scripts/deps.sh as root)"
	// WATInstallHint installs wat2wasm.
	WATInstallHint = "apt-get install -y wabt (or run scripts/deps.sh as root)"
)

// BuildC compiles C sources into the wasm32-wasi reactor out with clang and
// abi/include (-mexec-model=reactor: wasi-libc's crt1-reactor.o defines
// _initialize). Without a working toolchain the test is skipped with the
// install hint, unless CI=true, where it fails: there a skipped test would
// be one that cannot fail. out "" is a file in a tb.TempDir; BuildC
// returns the module's path.
func BuildC(tb testing.TB, out string, srcs ...string) string {
	tb.Helper()
	out = outPath(tb, out)
	clang, err := exec.LookPath("clang")
	if err != nil {
		MissingTool(tb, "clang not found", CInstallHint)
	}
	args := append([]string{"--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-Wall", "-Werror", "-Wl,--strip-debug",
		"-I", filepath.Join(RepoRoot(), "abi", "include"), "-o", out}, srcs...)
	b, err := exec.Command(clang, args...).CombinedOutput()
	if err == nil {
		return out
	}
	for _, sign := range []string{"libclang_rt.builtins-wasm32", "wasm-ld", "crt1-reactor.o", "'stdint.h' file not found", "'string.h' file not found", "unable to create target"} {
		if strings.Contains(string(b), sign) {
			MissingTool(tb, "clang cannot build for wasm32-wasi: "+strings.TrimSpace(string(b)), CInstallHint)
		}
	}
	tb.Fatalf("clang %s: %v\n%s", strings.Join(args, " "), err, b)
	return ""
}

// outPath is out, or a module file in a tb.TempDir when out is "".
func outPath(tb testing.TB, out string) string {
	if out == "" {
		out = filepath.Join(tb.TempDir(), "module.wasm")
	}
	return out
}

// Wat2Wasm assembles the WebAssembly text file src into out with wabt's
// wat2wasm; without it the test is skipped (failed under CI=true) with the
// install hint. out "" is a file in a tb.TempDir; Wat2Wasm returns the
// module's path.
func Wat2Wasm(tb testing.TB, out, src string) string {
	tb.Helper()
	out = outPath(tb, out)
	wat2wasm, err := exec.LookPath("wat2wasm")
	if err != nil {
		MissingTool(tb, "wat2wasm not found", WATInstallHint)
	}
	if b, err := exec.Command(wat2wasm, "-o", out, src).CombinedOutput(); err != nil {
		tb.Fatalf("wat2wasm %s: %v\n%s", src, err, b)
	}
	return out
}

// MissingTool skips the test for a missing build tool, naming how to
// install it — or fails it when CI=true.
func MissingTool(tb testing.TB, why, hint string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s; CI=true, so this test cannot be skipped: %s", why, hint)
	}
	tb.Skipf("%s: %s", why, hint)
}
