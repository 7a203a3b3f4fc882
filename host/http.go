package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/gorilla/mux"
	"github.com/gorilla/websocket"
)

// errorStatuses are the errors Fetch may return (errors.Is), each with
// its HTTP status and error code; the first that matches wins.
var errorStatuses = []struct {
	errs   []error
	status int
	code   string
}{
	{[]error{ErrOutcomeUnknown}, http.StatusBadGateway, "outcome_unknown"},
	{[]error{ErrUnknownBinding}, http.StatusNotFound, "unknown_binding"},
	{[]error{ErrBadKey}, http.StatusBadRequest, "bad_key"},
	{[]error{ErrOverloaded}, http.StatusServiceUnavailable, "shard_overloaded"},
	{[]error{ErrClosed}, http.StatusServiceUnavailable, "shutting_down"},
	{[]error{ErrTimeout}, http.StatusGatewayTimeout, "shard_timeout"},
	{[]error{ErrTrap}, http.StatusInternalServerError, "shard_crashed"},
	{[]error{ErrBadResponse}, http.StatusBadGateway, "shard_bad_response"},
	{[]error{storage.ErrStorageFull}, http.StatusInsufficientStorage, "storage_full"},
	{[]error{storage.ErrStorageUnavailable}, http.StatusServiceUnavailable, "storage_unavailable"},
	{[]error{ErrCommit}, http.StatusInternalServerError, "storage_commit_failed"},
	{[]error{ErrShardUnavailable}, http.StatusServiceUnavailable, "shard_unavailable"},
	{[]error{ErrShardElsewhere}, http.StatusMisdirectedRequest, "shard_elsewhere"},
	{[]error{ErrFenced, ErrNotOwner}, http.StatusServiceUnavailable, "shard_moved"},
	{[]error{ErrNotRun}, http.StatusServiceUnavailable, "not_run"},
	{[]error{ErrUnavailable}, http.StatusServiceUnavailable, "shard_unavailable"},
	{[]error{context.Canceled, context.DeadlineExceeded}, http.StatusServiceUnavailable, "cancelled"},
}

// ErrorStatus maps an error from Fetch to an HTTP status and error code.
func ErrorStatus(err error) (int, string) {
	for _, e := range errorStatuses {
		for _, target := range e.errs {
			if errors.Is(err, target) {
				return e.status, e.code
			}
		}
	}
	return http.StatusInternalServerError, "internal"
}

// Routes registers the host's own routes on r:
//
//	ANY /do/{binding}/{key}/{rest...}  the shard for key sees path /{rest...}
//	                                   (404 unknown_binding for an Internal binding)
//	GET /healthz                       liveness
//
// It turns off r's path cleaning (mux.Router.SkipClean): an empty key
// (/do/B//x) is a 400 bad_key, never a redirect to another shard.
func (h *Host) Routes(r *mux.Router) {
	r.SkipClean(true)
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/do/").Handler(http.HandlerFunc(h.serveDO))
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
	binding, key, rest, err := parseDOPath(r.URL.EscapedPath())
	if err != nil {
		status, code := ErrorStatus(err)
		httpx.WriteError(w, status, code, err.Error())
		return
	}
	if ns, ok := h.namespace(binding); ok && ns.binding.Internal {
		// Answered exactly like a binding that does not exist.
		httpx.WriteError(w, http.StatusNotFound, "unknown_binding", fmt.Sprintf("%v %q", ErrUnknownBinding, binding))
		return
	}
	if r.URL.RawQuery != "" {
		rest += "?" + r.URL.RawQuery
	}
	if websocket.IsWebSocketUpgrade(r) {
		h.serveUpgrade(w, r, binding, key, rest)
		return
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
	req := &abi.Request{Method: r.Method, Path: rest, Header: requestHeader(r), Body: body}
	resp, err := h.Fetch(r.Context(), binding, key, req)
	if err != nil {
		h.writeFetchError(w, binding, key, err)
		return
	}
	writeResponse(w, resp)
}

// requestHeader is r's header as the shard sees it.
func requestHeader(r *http.Request) []abi.Header {
	var hs []abi.Header
	for name, vals := range r.Header {
		for _, v := range vals {
			hs = append(hs, abi.Header{Name: name, Value: v})
		}
	}
	return hs
}

// writeResponse writes a shard's response; the host sets the framing.
func writeResponse(w http.ResponseWriter, resp *abi.Response) {
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

// writeFetchError answers a failed Fetch. A client error (4xx, 503 of a
// full queue…) says what was wrong; a failure inside the host or the shard
// (5xx: a trap's stack, a commit error) keeps its details in the log, under
// a request id the answer gives.
func (h *Host) writeFetchError(w http.ResponseWriter, binding, key string, err error) {
	status, code := ErrorStatus(err)
	if errors.Is(err, ErrShardUnavailable) {
		// No host of the POP serves the shard now: a cluster's answer.
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
		httpx.WriteError(w, status, code, err.Error())
		return
	}
	if clientVisible(status, code) {
		httpx.WriteError(w, status, code, err.Error())
		return
	}
	id := httpx.WriteInternal(w, status, code, publicMessage(code))
	h.log.Warn().Err(err).Str("request_id", id).Str("binding", binding).Str("key", key).Int("status", status).Str("code", code).Msg("/do request failed")
}

// clientVisible reports whether a failed Fetch's own message may be shown
// to its caller: a client error, or a condition of the host a client may
// act on (retry later), whose messages name no internals.
func clientVisible(status int, code string) bool {
	switch code {
	case "shard_overloaded", "shutting_down", "not_run", "cancelled", "storage_full", "storage_unavailable", "shard_moved", "shard_elsewhere":
		return true
	}
	return status < 500
}

// publicMessage is what a client learns of a 5xx failure.
func publicMessage(code string) string {
	switch code {
	case "shard_timeout":
		return "the shard did not answer within event_timeout"
	case "shard_crashed":
		return "the shard crashed handling the request; it restarts from storage"
	case "shard_bad_response":
		return "the shard returned a response the host cannot decode"
	case "storage_commit_failed":
		return "the request's writes could not be made durable"
	case "shard_unavailable":
		return "the shard could not start"
	}
	return "internal error"
}

// parseDOPath splits an escaped request path /do/{binding}/{key}/{rest...}
// by the one rule for keys everywhere (the /do route, the admin API): the
// binding and the key are their path segments percent-decoded, exactly —
// "a%2Fb" is the key "a/b", not the key "a" with the rest "/b". rest is
// the remainder, still escaped, from its slash ("/" when there is none).
// A key that is empty, "." or "..", or badly escaped, is ErrBadKey.
func parseDOPath(escaped string) (binding, key, rest string, err error) {
	p, ok := strings.CutPrefix(escaped, "/do/")
	if !ok {
		return "", "", "", fmt.Errorf("%w: path %q is not under /do/", ErrBadKey, escaped)
	}
	rawBinding, p, _ := strings.Cut(p, "/")
	rawKey, after, hasRest := strings.Cut(p, "/")
	rest = "/"
	if hasRest {
		rest += after
	}
	if binding, err = url.PathUnescape(rawBinding); err != nil || binding == "" {
		return "", "", "", fmt.Errorf("%w %q", ErrUnknownBinding, rawBinding)
	}
	key, err = url.PathUnescape(rawKey)
	switch {
	case err != nil:
		return "", "", "", fmt.Errorf("%w: key %q is not a valid escaped path segment", ErrBadKey, rawKey)
	case key == "":
		return "", "", "", fmt.Errorf("%w: empty key (the path is /do/{binding}/{key}/...)", ErrBadKey)
	case key == "." || key == "..":
		return "", "", "", fmt.Errorf("%w: %q cannot be a key (clients and proxies rewrite dot segments)", ErrBadKey, key)
	}
	return binding, key, rest, nil
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
