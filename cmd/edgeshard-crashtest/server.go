package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/internal/childproc"
	"github.com/edgeshard/edgeshard/internal/loopback"
)

// server is the edgeshard process under test: `edgeshard serve` on a
// config in its own directory, its log appended to dir/edgeshard.log
// across restarts.
type server struct {
	bin   string
	dir   string
	env   []string
	addr  string // edge API
	admin string // admin API
	token string

	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File

	// flush is signalled (without blocking) on every flush log line of a
	// shard (E-VIBECODR-2130 events, 2140 counters): the crash test kills
	// right after one to crash mid-flush.
	flush chan string

	mu      sync.Mutex
	counts  map[string]int // log line counts by kind, over all runs
	errs    []string       // distinct error-level messages (first few)
	started atomic.Int64   // process starts
}

// Codes the log scanner counts (see docs/OPERATIONS.md).
const (
	codeEventsFlushed   = "E-VIBECODR-2130"
	codeEventsFailed    = "E-VIBECODR-2131"
	codeCountersFlushed = "E-VIBECODR-2140"
	codeCountersFailed  = "E-VIBECODR-2141"
)

func newServer(bin, dir string, env []string, config func(addr, admin string) string, token string) (*server, error) {
	a, err := loopback.FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	addr, admin := a[0], a[1]
	if err := os.WriteFile(filepath.Join(dir, "edgeshard.toml"), []byte(config(addr, admin)), 0o644); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(filepath.Join(dir, "edgeshard.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &server{bin: bin, dir: dir, env: env, addr: addr, admin: admin, token: token, log: lf,
		flush: make(chan string, 1), counts: map[string]int{}}, nil
}

func (s *server) url() string      { return "http://" + s.addr }
func (s *server) adminURL() string { return "http://" + s.admin }

// start runs the process and waits (up to a minute) until /healthz answers.
func (s *server) start(ctx context.Context) error {
	n := s.started.Add(1)
	fmt.Fprintf(s.log, "%s%d at %s\n", startMarker, n, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.bin, "serve", "--config", filepath.Join(s.dir, "edgeshard.toml"))
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Env = append(cmd.Env, "EDGESHARD_ADMIN_TOKEN="+s.token)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	s.mu.Lock() // running() reads done from other goroutines (the cluster mode's key watch)
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		s.scan(pr)
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		<-scanned
		fmt.Fprintf(s.log, "%s%s (%v)\n", exitMarker, time.Now().Format(time.RFC3339Nano), cmd.ProcessState)
		close(done)
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	err := childproc.WaitReady(ctx, client, s.url(), s.done, time.Minute, 20*time.Millisecond)
	switch {
	case errors.Is(err, childproc.ErrExited):
		return fmt.Errorf("edgeshard exited during start (exit %v); see %s", cmd.ProcessState, s.log.Name())
	case errors.Is(err, childproc.ErrNotReady):
		s.kill()
		return fmt.Errorf("%w; see %s", err, s.log.Name())
	case err != nil:
		s.kill()
		return err
	}
	return nil
}

// Markers the crash test writes into a host's log: a process start, and
// its end (after its last line).
const (
	startMarker = "---- crashtest: start #"
	exitMarker  = "---- crashtest: exited at "
)

// scan copies the process's output to the log file and counts the lines
// the crash test cares about.
func (s *server) scan(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		s.log.WriteString(line + "\n")
		var kind string
		switch {
		case strings.Contains(line, `"code":"`+codeEventsFlushed+`"`):
			kind = codeEventsFlushed
		case strings.Contains(line, `"code":"`+codeCountersFlushed+`"`):
			kind = codeCountersFlushed
			if strings.Contains(line, `"replay":"true"`) {
				s.bump("counter flush replays")
			}
		case strings.Contains(line, `"code":"`+codeEventsFailed+`"`):
			kind = codeEventsFailed
		case strings.Contains(line, `"code":"`+codeCountersFailed+`"`):
			kind = codeCountersFailed
		case strings.Contains(line, `"restored persisted alarms"`):
			kind = "boots with persisted alarms"
		}
		if kind != "" {
			s.bump(kind)
		}
		if kind == codeEventsFlushed || kind == codeCountersFlushed {
			select {
			case s.flush <- kind:
			default:
			}
		}
		if strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"level":"fatal"`) || strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") {
			s.noteError(line)
		}
	}
	io.Copy(io.Discard, r)
}

func (s *server) bump(kind string) {
	s.mu.Lock()
	s.counts[kind]++
	s.mu.Unlock()
}

func (s *server) noteError(line string) {
	msg := line
	if i := strings.Index(line, `"message":"`); i >= 0 {
		msg = line[i+len(`"message":"`):]
		if j := strings.IndexByte(msg, '"'); j >= 0 {
			msg = msg[:j]
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts["error lines"]++
	for _, e := range s.errs {
		if e == msg {
			return
		}
	}
	if len(s.errs) < 10 {
		s.errs = append(s.errs, msg)
	}
}

// errorLines returns how many error-level lines the host logged and the
// first few distinct messages.
func (s *server) errorLines() (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts["error lines"], append([]string(nil), s.errs...)
}

func (s *server) count(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[kind]
}

// drainFlushSignal forgets a flush seen earlier, so waitFlush waits for a
// new one.
func (s *server) drainFlushSignal() {
	select {
	case <-s.flush:
	default:
	}
}

// waitFlush waits up to d for a shard's flush log line of the given kind
// (E-VIBECODR-2130 or 2140).
func (s *server) waitFlush(ctx context.Context, kind string, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case k := <-s.flush:
			if k == kind {
				return true
			}
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		case <-s.done:
			return false
		}
	}
}

// kill sends SIGKILL (a crash: nothing is flushed or closed) and waits.
func (s *server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return // already exited
	default:
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	fmt.Fprintf(s.log, "---- crashtest: SIGKILL at %s\n", time.Now().Format(time.RFC3339Nano))
}

// signal sends sig to the running process (SIGSTOP, SIGCONT).
func (s *server) signal(sig syscall.Signal) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("not running")
	}
	return s.cmd.Process.Signal(sig)
}

// running reports whether the process is up (not exited).
func (s *server) running() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// term sends SIGTERM and waits up to timeout for a clean exit (code 0).
func (s *server) term(timeout time.Duration) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("not running")
	}
	if !childproc.TermWait(s.cmd.Process, s.done, timeout) {
		s.kill()
		return fmt.Errorf("edgeshard did not exit within %v of SIGTERM; see %s", timeout, s.log.Name())
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("edgeshard exited with code %d after SIGTERM; see %s", code, s.log.Name())
	}
	return nil
}

func (s *server) close() {
	s.kill()
	s.log.Close()
}
