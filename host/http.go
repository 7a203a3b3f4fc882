package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/gorilla/mux"
)

// ErrorStatus maps an error from Fetch to an HTTP status and error code.
func ErrorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, ErrUnknownBinding):
		return http.StatusNotFound, "unknown_binding"
	case errors.Is(err, ErrBadKey):
		return http.StatusBadRequest, "bad_key"
	case errors.Is(err, ErrOverloaded):
		return http.StatusServiceUnavailable, "shard_overloaded"
	case errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable, "shutting_down"
	case errors.Is(err, ErrTimeout):
		return http.StatusGatewayTimeout, "shard_timeout"
	case errors.Is(err, ErrTrap):
		return http.StatusInternalServerError, "shard_crashed"
	case errors.Is(err, ErrBadResponse):
		return http.StatusBadGateway, "shard_bad_response"
	case errors.Is(err, ErrCommit):
		return http.StatusInternalServerError, "storage_commit_failed"
	case errors.Is(err, ErrNotRun):
		return http.StatusServiceUnavailable, "not_run"
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, "shard_unavailable"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "cancelled"
	}
	return http.StatusInternalServerError, "internal"
}

// Routes registers the host's own routes on r:
//
//	ANY /do/{binding}/{key}/{rest...}  the shard for key sees path /{rest...}
//	                                   (404 unknown_binding for an Internal binding)
//	GET /healthz                       liveness
func (h *Host) Routes(r *mux.Router) {
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/do/{binding}/{key}").Handler(http.HandlerFunc(h.serveDO))
}

// Handler returns a router with only the host's own routes.
func (h *Host) Handler() http.Handler {
	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFound()
	r.MethodNotAllowedHandler = httpx.MethodNotAllowed()
	h.Routes(r)
	return r
}

func (h *Host) serveDO(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	binding, key := vars["binding"], vars["key"]
	if ns, ok := h.namespace(binding); ok && ns.binding.Internal {
		// Answered exactly like a binding that does not exist.
		httpx.WriteError(w, http.StatusNotFound, "unknown_binding", fmt.Sprintf("%v %q", ErrUnknownBinding, binding))
		return
	}
	// The shard sees the path after /do/{binding}/{key}, from the raw
	// (escaped) path so keys and rest keep their encoding.
	raw := r.URL.EscapedPath()
	prefix := len("/do/") + len(escapedSeg(raw, 2)) + 1 + len(escapedSeg(raw, 3))
	rest := "/"
	if prefix < len(raw) {
		rest = raw[prefix:]
	}
	if r.URL.RawQuery != "" {
		rest += "?" + r.URL.RawQuery
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpx.WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", h.cfg.MaxBodyBytes))
			return
		}
		httpx.WriteError(w, http.StatusBadRequest, "bad_body", "could not read request body: "+err.Error())
		return
	}
	req := &abi.Request{Method: r.Method, Path: rest, Body: body}
	for name, vals := range r.Header {
		for _, v := range vals {
			req.Header = append(req.Header, abi.Header{Name: name, Value: v})
		}
	}
	resp, err := h.Fetch(r.Context(), binding, key, req)
	if err != nil {
		status, code := ErrorStatus(err)
		httpx.WriteError(w, status, code, err.Error())
		return
	}
	for _, hd := range resp.Header {
		if hopByHop(hd.Name) || strings.ContainsAny(hd.Value, "\x00\r\n") {
			continue // the host owns framing; a shard cannot set it
		}
		w.Header().Add(hd.Name, hd.Value)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	w.Write(resp.Body)
}

// escapedSeg returns the n-th "/"-separated segment of p (0 is before the
// first slash).
func escapedSeg(p string, n int) string {
	start := 0
	for i := 0; i < n; i++ {
		j := indexFrom(p, '/', start)
		if j < 0 {
			return ""
		}
		start = j + 1
	}
	end := indexFrom(p, '/', start)
	if end < 0 {
		end = len(p)
	}
	return p[start:end]
}

func indexFrom(s string, c byte, from int) int {
	for i := from; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// hopByHop reports headers that describe the connection, not the message
// (RFC 9110 §7.6.1), plus Content-Length, which the host sets itself.
func hopByHop(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return true
	}
	return false
}
