package harness

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server is an HTTP server on a free loopback port, as httptest.Server is,
// without the flag httptest registers in every binary that links it (the
// conformance runner, and so this package, ships in edgeshard).
type Server struct {
	// URL is http://127.0.0.1:port, without a trailing slash.
	URL  string
	srv  *http.Server
	done chan struct{}
	once sync.Once
}

// Serve serves h on 127.0.0.1:0.
func Serve(h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: time.Minute}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // http.ErrServerClosed once Close is called
	}()
	return s, nil
}

// Close stops the server: requests in flight get a few seconds to finish,
// then their connections are closed. It may be called more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if s.srv.Shutdown(ctx) != nil {
			s.srv.Close()
		}
		<-s.done
	})
}
