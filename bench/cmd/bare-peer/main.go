// Command bare-peer is the floor of the peer benchmark (bench/cmd/peers):
// a plain net/http server that makes the same rate-limit decision as
// RateLimitShard — the same POST /check body, parser, sliding-window
// arithmetic (plugins/proto/ratelimit and window) and JSON answer — on an
// in-memory map behind striped mutexes: no shard, no storage, nothing
// durable. It is what one would write in an afternoon, and what neither
// edgeshard nor gubernator can beat on the same machine.
//
// It prints one line, "ready http=ADDR", once it listens, and stops on
// SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/plugins/proto/ratelimit"
	"github.com/edgeshard/edgeshard/plugins/proto/window"
)

func main() {
	addr := flag.String("http", "127.0.0.1:0", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bare-peer:", err)
		os.Exit(1)
	}
	l := newLimiter()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /check", l.serveCheck)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Printf("ready http=%s\n", ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Close()
}

// stripes is the number of independently locked parts of the map.
const stripes = 64

// limiter keeps every bucket's window in memory.
type limiter struct {
	seed    maphash.Seed
	stripes [stripes]struct {
		mu sync.Mutex
		m  map[string]window.Window
	}
}

func newLimiter() *limiter {
	l := &limiter{seed: maphash.MakeSeed()}
	for i := range l.stripes {
		l.stripes[i].m = map[string]window.Window{}
	}
	return l
}

// serveCheck decides one /check call: every bucket of the call allows it
// or none is counted (ratelimit.Decide), as RateLimitShard does.
func (l *limiter) serveCheck(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	bs, le := ratelimit.ParseCheck(string(body))
	if le != nil {
		http.Error(w, le.Error(), http.StatusBadRequest)
		return
	}
	// Lock the stripes of the call's buckets in index order, so that two
	// calls naming the same buckets never deadlock.
	var held [stripes]bool
	for i := range bs {
		held[maphash.String(l.seed, bs[i].Key)%stripes] = true
	}
	for i := range held {
		if held[i] {
			l.stripes[i].mu.Lock()
		}
	}
	for i := range bs {
		s := &l.stripes[maphash.String(l.seed, bs[i].Key)%stripes]
		bs[i].Stored, bs[i].Exists = s.m[bs[i].Key]
	}
	all := ratelimit.Decide(bs, time.Now().UnixMilli())
	if all {
		for i := range bs {
			l.stripes[maphash.String(l.seed, bs[i].Key)%stripes].m[bs[i].Key] = bs[i].State
		}
	}
	for i := range held {
		if held[i] {
			l.stripes[i].mu.Unlock()
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(ratelimit.AppendReply(make([]byte, 0, 64+160*len(bs)), all, bs))
}
