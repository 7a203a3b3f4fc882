// Package pgtest starts a throwaway PostgreSQL server for tests: initdb in
// a temporary directory, the server on a free loopback port, one database
// per test. A test binary starts one server (Shared) and every test gets a
// fresh database on it, so a package's PostgreSQL tests pay for initdb
// once. The server is a child of the test binary and dies with it.
// Programs that need one of their own — the crash test, the benchmark
// driver — call Start and Close it.
//
// It needs Debian's postgresql package (initdb and postgres, found on PATH
// or under /usr/lib/postgresql/*/bin). Without them the test is skipped
// with what to install — except under CI=true, where a missing PostgreSQL
// fails the test: a silent skip there would be a test that cannot fail.
// As root, the server runs as the "postgres" user (PostgreSQL refuses to
// run as root).
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/loopback"
	"github.com/edgeshard/edgeshard/internal/procdir"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// Server is a running throwaway PostgreSQL.
type Server struct {
	Port int
	dir  string
	cmd  *exec.Cmd
	log  string
}

// admin runs q on the server's "postgres" database, on a pool of its own
// that it closes: no goroutine of pgtest outlives a call, so packages that
// check for leaked goroutines (goleak) can use it.
func (s *Server) admin(ctx context.Context, q string) error {
	db, err := sql.Open("pgx", s.URL("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, q)
	return err
}

// Start starts a throwaway server of the caller's own (initdb in a
// temporary directory, the server on a free loopback port, fsync off: a
// test server, not a durable one). It dies with the calling process;
// Close stops it sooner and removes its files. The error matches
// ErrNotInstalled when initdb or postgres cannot be found.
func Start() (*Server, error) { return start() }

// Close stops the server (SIGINT, its fast shutdown; SIGKILL after 10 s) and removes
// its directory.
func (s *Server) Close() error {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	}
	return os.RemoveAll(s.dir)
}

// CreateDB creates database name on the server and returns its URL.
func (s *Server) CreateDB(ctx context.Context, name string) (string, error) {
	if err := s.admin(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.URL(name), nil
}

// Log returns the path of the server's log file.
func (s *Server) Log() string { return s.log }

// Install is what to run when PostgreSQL is missing.
const Install = "apt-get install -y postgresql (Debian; the tests need initdb and postgres)"

var (
	sharedOnce sync.Once
	shared     *Server
	sharedErr  error
)

// Shared returns the test binary's server, starting it on first use. It
// skips (or, under CI=true, fails) tb when PostgreSQL is not installed.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	sharedOnce.Do(func() { shared, sharedErr = start() })
	if sharedErr != nil {
		if errors.Is(sharedErr, ErrNotInstalled) && os.Getenv("CI") != "true" {
			tb.Skipf("PostgreSQL is not installed: %v; to run these tests: %s", sharedErr, Install)
		}
		tb.Fatalf("throwaway PostgreSQL: %v", sharedErr)
	}
	return shared
}

// DB creates a fresh database on the shared server for tb and returns its
// URL (postgres://…); the database is dropped when tb ends.
func DB(tb testing.TB) string {
	tb.Helper()
	s := Shared(tb)
	var b [6]byte
	rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.admin(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.admin(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return s.URL(name)
}

// URL returns the URL of database name on the server.
func (s *Server) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

// ErrNotInstalled is matched by Start's error when initdb or postgres is
// not found.
var ErrNotInstalled = errors.New("initdb/postgres not found")

// binDir finds the directory holding initdb and postgres.
func binDir() (string, error) {
	if p, err := exec.LookPath("postgres"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Sort(sort.Reverse(sort.StringSlice(dirs))) // newest version first
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", ErrNotInstalled
}

func start() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := procdir.Make("edgeshard-pg")
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, and no postgres user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, err := loopback.FreePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	if cred != nil {
		os.Chown(logPath, int(cred.Uid), int(cred.Gid))
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "shared_buffers=64MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server dies with the test binary, whatever ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s := &Server{Port: port, dir: dir, cmd: cmd, log: logPath}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = s.admin(ctx, "SELECT 1")
		cancel()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			tail, _ := os.ReadFile(logPath)
			cmd.Process.Kill()
			return nil, fmt.Errorf("postgres did not accept connections on port %d: %v\n%s", port, err, lastLines(string(tail), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
