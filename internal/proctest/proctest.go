// Package proctest runs the real edgeshard binary in tests: build it once
// per test binary, start it with a config on free loopback ports, wait until
// it is ready, stop it with SIGTERM or SIGKILL, restart it on the same data.
package proctest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/childproc"
	"github.com/edgeshard/edgeshard/internal/loopback"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/edgeshard (without -race: it runs as a separate
// process) once per test binary and returns its path.
func Binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edgeshard-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "edgeshard")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/edgeshard")
		cmd.Dir = testutil.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/edgeshard: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	a, err := loopback.FreeAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// Proc is one running edgeshard process.
type Proc struct {
	tb     testing.TB
	Config string // path of the config file
	Addr   string // listen address
	Env    []string
	cmd    *exec.Cmd
	out    *testutil.LogBuffer
	done   chan struct{}
}

// Start writes config (with {{LISTEN}} replaced by a free address) into
// dir/edgeshard.toml and starts `edgeshard serve` in dir. It waits for
// /healthz and stops the process when the test ends.
func Start(tb testing.TB, dir, config string, env ...string) *Proc {
	tb.Helper()
	addr := FreeAddr(tb)
	path := filepath.Join(dir, "edgeshard.toml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(config, "{{LISTEN}}", addr)), 0o644); err != nil {
		tb.Fatal(err)
	}
	p := &Proc{tb: tb, Config: path, Addr: addr, Env: env}
	p.start()
	tb.Cleanup(func() { p.Kill() })
	return p
}

func (p *Proc) start() {
	p.tb.Helper()
	p.cmd = exec.Command(Binary(p.tb), "serve", "--config", p.Config)
	p.cmd.Dir = filepath.Dir(p.Config)
	p.cmd.Env = append(os.Environ(), p.Env...)
	p.out = &testutil.LogBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		p.tb.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	if err := childproc.WaitReady(context.Background(), http.DefaultClient, p.URL(), p.done, 60*time.Second, 25*time.Millisecond); err != nil {
		p.tb.Fatalf("%v:\n%s", err, p.out.String())
	}
}

// URL returns the base URL of the process.
func (p *Proc) URL() string { return "http://" + p.Addr }

// Output returns everything the process logged.
func (p *Proc) Output() string { return p.out.String() }

// Kill sends SIGKILL (a crash: nothing is flushed) and waits for the exit.
func (p *Proc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Term sends SIGTERM and waits (up to timeout) for a clean exit; it returns
// the process's exit error, if any.
func (p *Proc) Term(timeout time.Duration) error {
	if !childproc.TermWait(p.cmd.Process, p.done, timeout) {
		p.Kill()
		return fmt.Errorf("edgeshard did not exit within %s after SIGTERM", timeout)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("edgeshard exited with code %d after SIGTERM:\n%s", code, p.out.String())
	}
	return nil
}

// Signal sends sig to the process (SIGSTOP freezes it, SIGCONT resumes it).
func (p *Proc) Signal(sig syscall.Signal) {
	p.tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		// The process is gone: say how it ended and what it logged.
		select {
		case <-p.done:
			p.tb.Fatalf("signal %v: %v: edgeshard exited (%v):\n%s", sig, err, p.cmd.ProcessState, p.out.String())
		default:
		}
		p.tb.Fatalf("signal %v: %v", sig, err)
	}
}

// Restart starts the process again with the same config and data.
func (p *Proc) Restart() {
	p.tb.Helper()
	p.start()
}
