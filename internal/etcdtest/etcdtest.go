// Package etcdtest starts a real etcd server for tests and for the
// cluster crash test: the etcd server package (go.etcd.io/etcd/server/v3/
// embed) in process, on free loopback ports, its data in a temporary
// directory. A test binary shares one server (Shared); each test gets a key
// prefix of its own (Prefix), so tests do not see each other's keys.
// Programs that need one of their own call Start and Close it.
package etcdtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/procdir"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running etcd.
type Server struct {
	e   *embed.Etcd
	dir string
	url string
}

// Start starts an etcd server of the caller's own on free loopback ports.
// Its data directory is named after the process (etcdtest-<pid>-…); the
// directories of processes that are gone (a test binary's Shared server
// dies with it, ~120 MiB of preallocated WAL each) are removed first.
func Start() (*Server, error) {
	dir, err := procdir.Make("etcdtest")
	if err != nil {
		return nil, err
	}
	client, peer, err := freeURLs()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "etcdtest"
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("etcdtest: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("etcdtest: not ready after 30s")
	}
	return &Server{e: e, dir: dir, url: client.String()}, nil
}

// freeURLs picks two free loopback ports (client, peer).
func freeURLs() (client, peer url.URL, err error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var us [2]url.URL
	for i := range us {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return client, peer, err
		}
		ls = append(ls, l)
		us[i] = url.URL{Scheme: "http", Host: l.Addr().String()}
	}
	return us[0], us[1], nil
}

// Endpoint is the server's client URL ("http://127.0.0.1:PORT").
func (s *Server) Endpoint() string { return s.url }

// Close stops the server and removes its data.
func (s *Server) Close() {
	s.e.Close()
	os.RemoveAll(s.dir)
}

var shared struct {
	once sync.Once
	s    *Server
	err  error
}

// Shared returns the test binary's etcd server, started on first use and
// left to die with the process (the next Start removes its data). A
// failure to start fails the test.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() { shared.s, shared.err = Start() })
	if shared.err != nil {
		t.Fatalf("etcd: %v", shared.err)
	}
	return shared.s
}

// Prefix returns a key prefix of the test's own ("/t-<random>").
func Prefix(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return "/t-" + hex.EncodeToString(b[:])
}
