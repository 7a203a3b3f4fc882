package edge

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/gorilla/mux"
)

// middleware instruments a matched route of the router.
func (a *API) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := "unknown"
		if cr := mux.CurrentRoute(r); cr != nil {
			if t, err := cr.GetPathTemplate(); err == nil {
				route = t
			}
		}
		a.serveInstrumented(route, next, w, r.WithContext(a.withSQLBudget(r.Context())))
	})
}

// instrument wraps a handler outside the routes (not found, method not
// allowed) with the same recover and metrics.
func (a *API) instrument(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.serveInstrumented(route, next, w, r.WithContext(a.withSQLBudget(r.Context())))
	})
}

// serveInstrumented runs next, recovering a panic into a logged 500 and
// recording the request's route, method, status and duration.
func (a *API) serveInstrumented(route string, next http.Handler, w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	method := metricMethod(r.Method)
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler { //nolint:errorlint // the sentinel is compared by identity
				a.record(route, method, sw.statusOr(499), t0)
				panic(v) // a deliberate abort: net/http closes the connection
			}
			a.m.panics.Inc()
			a.log.Error().Str("route", route).Str("method", r.Method).Str("panic", fmt.Sprint(v)).
				Bytes("stack", debug.Stack()).Msg("handler panicked; answered 500")
			if !sw.wrote {
				writeError(sw, http.StatusInternalServerError, "internal", "internal error")
			}
		}
		a.record(route, method, sw.statusOr(http.StatusOK), t0)
	}()
	next.ServeHTTP(sw, r)
}

func (a *API) record(route, method string, status int, t0 time.Time) {
	a.m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	a.m.duration.WithLabelValues(route, method).Observe(time.Since(t0).Seconds())
}

// metricMethod bounds the method label to the standard methods.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// statusWriter records the status a handler wrote. It keeps streaming
// working (Flush, and Unwrap for http.ResponseController).
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := w.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("hijack not supported")
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) statusOr(def int) int {
	if w.wrote {
		return w.status
	}
	return def
}
