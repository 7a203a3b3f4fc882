package admin

import (
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/gorilla/mux"
)

// The inspector: a web UI of plain HTML, CSS and JavaScript, embedded in
// the binary (no build step, no CDN: it works offline), served at / of the
// admin listener, and the read-only routes it uses beyond the admin API's
// own. Its pages are fragments of one page (#/, #/b/{binding},
// #/b/{binding}/s/{shard}); inspector/app.js draws them from the JSON
// routes.

//go:embed inspector
var uiFiles embed.FS

// uiAssets are the files served under /ui/, with their content types.
var uiAssets = map[string]string{
	"app.js":    "text/javascript; charset=utf-8",
	"style.css": "text/css; charset=utf-8",
}

// uiCSP is the pages' Content-Security-Policy: only this listener's own
// script and styles, nothing framed, nothing sent elsewhere. Every value a
// shard controls (keys, values, log lines) is written as text, never as
// markup (app.js), and this policy would refuse an injected script anyway.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

var loginTmpl = template.Must(template.ParseFS(uiFiles, "inspector/login.html"))

func (s *Server) uiRoutes(r *mux.Router) {
	r.HandleFunc("/", s.uiIndex).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/ui/{file}", s.uiAsset).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/login", s.login).Methods(http.MethodGet, http.MethodHead, http.MethodPost)
	r.HandleFunc("/logout", s.logout).Methods(http.MethodPost)
}

func uiHeaders(w http.ResponseWriter, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

func (s *Server) uiIndex(w http.ResponseWriter, r *http.Request) {
	b, err := uiFiles.ReadFile("inspector/index.html")
	if err != nil {
		httpx.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	uiHeaders(w, "text/html; charset=utf-8")
	w.Write(b)
}

func (s *Server) uiAsset(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["file"]
	ct, ok := uiAssets[name]
	if !ok {
		httpx.NotFound().ServeHTTP(w, r)
		return
	}
	b, err := uiFiles.ReadFile(path.Join("inspector", name))
	if err != nil {
		httpx.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	uiHeaders(w, ct)
	w.Write(b)
}

// loginPage shows the login form, with msg when a login failed. Its only
// style is inline (it is served to anyone, so it needs nothing behind
// the token).
func (s *Server) loginPage(w http.ResponseWriter, status int, msg string) {
	var buf bytes.Buffer
	if err := loginTmpl.Execute(&buf, struct{ Error string }{msg}); err != nil {
		httpx.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	uiHeaders(w, "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// listShards answers one page of the binding's active shards.
func (s *Server) listShards(w http.ResponseWriter, r *http.Request) {
	ns, ok := s.namespace(w, r)
	if !ok {
		return
	}
	q, limit, ok := pageParams(w, r)
	if !ok {
		return
	}
	query := host.ShardQuery{Prefix: q.Get("prefix"), After: q.Get("after"), Limit: limit}
	page := ns.ShardPage(query)
	out := ShardPage{
		Binding: ns.Name(), Prefix: query.Prefix, After: query.After, Limit: limit,
		Active: page.Active, Matching: page.Matching, More: page.More, Shards: make([]ShardRow, 0, len(page.Shards)),
	}
	for _, sh := range page.Shards {
		out.Shards = append(out.Shards, shardRow(sh))
	}
	if page.More {
		out.Next = nextPage(r, "after", page.Shards[len(page.Shards)-1].Shard, limit, query.Prefix)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// pageParams reads the query of a request for one page of a list, with
// its ?limit= (1..MaxListLimit, default DefaultListLimit), answering 400
// itself.
func pageParams(w http.ResponseWriter, r *http.Request) (q url.Values, limit int, ok bool) {
	q = r.URL.Query()
	l := q.Get("limit")
	if l == "" {
		return q, DefaultListLimit, true
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > MaxListLimit {
		httpx.WriteError(w, http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit = %q: want 1..%d", l, MaxListLimit))
		return q, 0, false
	}
	return q, n, true
}

// keyParam reads the key of ?key= (UTF-8) or ?key_b64= (standard base64),
// answering 400 itself.
func keyParam(w http.ResponseWriter, q url.Values) (string, bool) {
	if k := q.Get("key_b64"); k != "" {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			httpx.WriteError(w, http.StatusBadRequest, "bad_key", "key_b64 is not standard base64")
			return "", false
		}
		return string(b), true
	}
	if !q.Has("key") {
		httpx.WriteError(w, http.StatusBadRequest, "bad_key", "give the key as ?key= (UTF-8) or ?key_b64= (base64)")
		return "", false
	}
	return q.Get("key"), true
}

// getValue answers one whole value of a shard's storage, read on the
// shard's goroutine between two events like a listing.
func (s *Server) getValue(w http.ResponseWriter, r *http.Request) {
	ns, shard, ok := s.namespaceShard(w, r)
	if !ok {
		return
	}
	key, ok := keyParam(w, r.URL.Query())
	if !ok {
		return
	}
	type got struct {
		val   []byte
		found bool
	}
	g, ok := inspect(w, r, ns, shard, func(st host.StorageView) (got, error) {
		v, found, err := st.Get(key)
		return got{v, found}, err
	})
	if !ok {
		return
	}
	if !g.found {
		httpx.WriteError(w, http.StatusNotFound, "no_such_key", fmt.Sprintf("shard %s/%s has no key %q", ns.Name(), shard, key))
		return
	}
	out := ShardValue{Binding: ns.Name(), Shard: shard, Size: len(g.val), Value: base64.StdEncoding.EncodeToString(g.val)}
	out.Key, out.KeyEncoding = displayKey(key)
	httpx.WriteJSON(w, http.StatusOK, out)
}

// getLog answers the shard's tapped log lines after ?after=.
func (s *Server) getLog(w http.ResponseWriter, r *http.Request) {
	ns, shard, ok := s.namespaceShard(w, r)
	if !ok {
		return
	}
	var after uint64
	if a := r.URL.Query().Get("after"); a != "" {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			httpx.WriteError(w, http.StatusBadRequest, "bad_after", "after must be a log line's seq")
			return
		}
		after = n
	}
	lines, last := ns.ShardLog(shard, after)
	out := ShardLog{Binding: ns.Name(), Shard: shard, Tracing: ns.Tracing(shard), Lines: make([]LogLine, 0, len(lines)), Last: last}
	for _, l := range lines {
		ll := LogLine{Seq: l.Seq, Time: l.Time.UTC(), Level: l.Level, Source: l.Source, Message: l.Message, Fields: make([]LogField, 0, len(l.Fields))}
		for _, f := range l.Fields {
			ll.Fields = append(ll.Fields, LogField{Name: f.Name, Value: f.Value})
		}
		out.Lines = append(out.Lines, ll)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) getTrace(w http.ResponseWriter, r *http.Request) {
	ns, shard, ok := s.namespaceShard(w, r)
	if !ok {
		return
	}
	writeTraceState(w, ns, shard)
}

// writeTraceState answers whether the shard's host calls are traced.
func writeTraceState(w http.ResponseWriter, ns *host.Namespace, shard string) {
	httpx.WriteJSON(w, http.StatusOK, TraceState{Binding: ns.Name(), Shard: shard, On: ns.Tracing(shard)})
}

// putTrace switches the shard's host-call tracing on or off.
func (s *Server) putTrace(w http.ResponseWriter, r *http.Request) {
	ns, shard, ok := s.namespaceShard(w, r)
	if !ok {
		return
	}
	var body TraceState
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "bad_body", `want {"on": true} or {"on": false}`)
		return
	}
	if err := ns.SetTrace(shard, body.On); err != nil {
		if errors.Is(err, host.ErrTooManyTraced) {
			httpx.WriteError(w, http.StatusConflict, "too_many_traced", err.Error())
			return
		}
		hostError(w, err)
		return
	}
	s.log.Info().Str("binding", ns.Name()).Str("shard", shard).Bool("on", body.On).Str("remote", r.RemoteAddr).Msg("shard tracing switched")
	writeTraceState(w, ns, shard)
}

// getSeries answers the charts of every binding, or of ?binding=.
func (s *Server) getSeries(w http.ResponseWriter, r *http.Request) {
	var names []string
	if b := r.URL.Query().Get("binding"); b != "" {
		if _, ok := s.h.Namespace(b); !ok {
			httpx.WriteError(w, http.StatusNotFound, "unknown_binding", fmt.Sprintf("no binding named %q", b))
			return
		}
		names = []string{b}
	} else {
		for _, ns := range s.h.Namespaces() {
			names = append(names, ns.Name())
		}
	}
	httpx.WriteJSON(w, http.StatusOK, s.sampler.series(names))
}
