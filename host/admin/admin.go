// Package admin is edgeshard's operator API: inspect bindings and shards,
// push a new module version (hot swap), roll back, and run maintenance jobs;
// and the inspector, a web UI over the same API served at /. It listens
// apart from the edge API (admin_listen) and every route, known or not,
// requires "Authorization: Bearer <admin token>" — or, for what the
// inspector does, a browser session started with that token at /login
// (session.go).
//
//	GET  /admin/bindings                           every binding: module version, swap history, shards, queues, alarms
//	GET  /admin/bindings/{name}                    one binding, with its running shards
//	PUT  /admin/bindings/{name}/module             body: the .wasm; validate, compile, swap
//	POST /admin/bindings/{name}/rollback           make the previous version current again
//	GET  /admin/bindings/{name}/shards             a page of active shards (?prefix=&after=&limit=)
//	GET  /admin/bindings/{name}/shards/{id}        storage keys (?prefix=&start_after=&limit=), alarm, instance
//	GET  /admin/bindings/{name}/shards/{id}/value  one whole value (?key= or ?key_b64=)
//	GET  /admin/bindings/{name}/shards/{id}/log    the shard's log tap (?after=seq)
//	PUT  /admin/bindings/{name}/shards/{id}/trace  body {"on":true|false}: trace its host calls
//	GET  /admin/series                             charts: per-binding rates over the last minutes
//	POST /admin/jobs/reconcile-counters            recompute counters from their source rows
//	POST /admin/jobs/drain                         flush every buffer shard; say whether all are empty (?wait=); on a POP, leave it (?leave=0: flush only)
//	GET  /admin/cluster                            a POP of several hosts: members, shards, moves (cluster.go)
//	POST /admin/cluster/evict/{node}, /admin/cluster/leave
//	POST /admin/backup                             every shard as one snapshot stream (snapshot.go)
//	GET  /admin/bindings/{name}/shards/{id}/export one shard's snapshot stream
//	PUT  /admin/bindings/{name}/shards/{id}/import body: a one-shard stream, into this empty shard
//	GET  /, /ui/{file}                             the inspector; GET|POST /login, POST /logout
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Defaults and bounds of the admin API.
const (
	// DefaultMaxModuleBytes caps an uploaded module.
	DefaultMaxModuleBytes = 64 << 20
	// DefaultListLimit and MaxListLimit bound a shard's key listing page.
	DefaultListLimit = 100
	MaxListLimit     = 1000
	// ValuePreviewBytes is how much of a value a listing shows.
	ValuePreviewBytes = 1024
)

// Options configures the admin API.
type Options struct {
	// Token is the bearer token every request must carry. Required.
	Token string
	// MaxModuleBytes caps a pushed module (default DefaultMaxModuleBytes);
	// a larger body is answered 413.
	MaxModuleBytes int64
	// Logger receives one line per push, rollback, job and refused request.
	Logger zerolog.Logger
	// Reconcile runs the counter reconciliation job for
	// POST /admin/jobs/reconcile-counters and returns a JSON-encodable
	// summary. When nil (no edge API with counters) the route answers 404
	// with code "reconcile_unavailable".
	Reconcile func(ctx context.Context) (any, error)
	// Drain flushes every buffer shard for POST /admin/jobs/drain, giving
	// up after wait, and returns a JSON-encodable report. On a host of a
	// POP (Cluster set) the route leaves the POP instead (Cluster.Leave)
	// unless asked ?leave=0. When nil (and no Cluster) the route answers
	// 404 with code "drain_unavailable".
	Drain func(ctx context.Context, wait time.Duration) (any, error)
	// Cluster, on a host of a POP of several, serves /admin/cluster
	// (cluster.go); nil answers 404 cluster_off.
	Cluster *ClusterOps

	// Metrics is the registry the inspector's charts sample: the one the
	// host's metrics (and the edge API's) are registered in. When nil the
	// host's own collectors are sampled (no fallbacks then).
	Metrics prometheus.Gatherer
	// FallbackBindings maps the pipeline label of the edge API's
	// edgeshard_edge_fallbacks_total to the binding whose chart counts it.
	FallbackBindings map[string]string
	// SampleInterval and SampleWindow set the charts' resolution and span
	// (defaults DefaultSampleInterval, DefaultSampleWindow).
	SampleInterval, SampleWindow time.Duration
	// SessionTTL bounds a browser login (default DefaultSessionTTL).
	SessionTTL time.Duration
}

// Server serves the admin API of one host.
type Server struct {
	h         *host.Host
	opts      Options
	log       zerolog.Logger
	tokenHash [sha256.Size]byte
	handler   http.Handler
	sessions  *sessions
	sampler   *sampler
}

// New returns the admin API of h. It fails when no token is given: the
// admin API never runs open. It starts the charts' sampler, which ends
// with Close or with the host.
func New(h *host.Host, opts Options) (*Server, error) {
	if h == nil {
		return nil, errors.New("admin: nil host")
	}
	if opts.Token == "" {
		return nil, errors.New("admin: a token is required (admin_token or EDGESHARD_ADMIN_TOKEN)")
	}
	if opts.MaxModuleBytes <= 0 {
		opts.MaxModuleBytes = DefaultMaxModuleBytes
	}
	s := &Server{h: h, opts: opts, log: opts.Logger.With().Str("component", "admin").Logger()}
	// Comparing digests keeps the comparison constant-time in the token's
	// length too (subtle.ConstantTimeCompare returns early on a length
	// mismatch).
	s.tokenHash = sha256.Sum256([]byte(opts.Token))
	s.sessions = newSessions(opts.SessionTTL)

	r := mux.NewRouter().UseEncodedPath()
	r.NotFoundHandler = httpx.NotFound()
	r.MethodNotAllowedHandler = httpx.MethodNotAllowed()
	r.HandleFunc("/admin/bindings", s.listBindings).Methods(http.MethodGet)
	r.HandleFunc("/admin/bindings/{name}", s.getBinding).Methods(http.MethodGet)
	r.HandleFunc("/admin/bindings/{name}/module", bearerOnly(s.putModule)).Methods(http.MethodPut)
	r.HandleFunc("/admin/bindings/{name}/rollback", bearerOnly(s.rollback)).Methods(http.MethodPost)
	r.HandleFunc("/admin/bindings/{name}/shards", s.listShards).Methods(http.MethodGet)
	r.HandleFunc("/admin/bindings/{name}/shards/{id}", s.getShard).Methods(http.MethodGet)
	r.HandleFunc("/admin/bindings/{name}/shards/{id}/value", s.getValue).Methods(http.MethodGet)
	r.HandleFunc("/admin/bindings/{name}/shards/{id}/log", s.getLog).Methods(http.MethodGet)
	r.HandleFunc("/admin/bindings/{name}/shards/{id}/trace", s.getTrace).Methods(http.MethodGet)
	r.HandleFunc("/admin/bindings/{name}/shards/{id}/trace", s.putTrace).Methods(http.MethodPut)
	r.HandleFunc("/admin/series", s.getSeries).Methods(http.MethodGet)
	r.HandleFunc("/admin/jobs/reconcile-counters", bearerOnly(s.reconcile)).Methods(http.MethodPost)
	r.HandleFunc("/admin/jobs/drain", bearerOnly(s.drain)).Methods(http.MethodPost)
	s.clusterRoutes(r)
	s.snapshotRoutes(r)
	s.uiRoutes(r)
	s.handler = s.authenticate(r)
	s.sampler = newSampler(h, opts, s.log)
	go s.sampler.run(h.Done())
	return s, nil
}

// Handler returns the admin API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops the charts' sampler. The handler keeps answering (with the
// charts as they were); the caller shuts its listener down.
func (s *Server) Close() { s.sampler.close() }

func (s *Server) authorized(header string) bool {
	const scheme = "bearer "
	if len(header) < len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(header[len(scheme):])))
	return subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) == 1
}

// namespace resolves the {name} route variable, answering 404 itself.
func (s *Server) namespace(w http.ResponseWriter, r *http.Request) (*host.Namespace, bool) {
	name, err := url.PathUnescape(mux.Vars(r)["name"])
	if err == nil {
		if ns, ok := s.h.Namespace(name); ok {
			return ns, true
		}
	}
	httpx.WriteError(w, http.StatusNotFound, "unknown_binding", fmt.Sprintf("no binding named %q", name))
	return nil, false
}

// namespaceShard resolves the {name} and {id} route variables, answering
// 4xx itself.
func (s *Server) namespaceShard(w http.ResponseWriter, r *http.Request) (*host.Namespace, string, bool) {
	ns, ok := s.namespace(w, r)
	if !ok {
		return nil, "", false
	}
	shard, ok := s.shard(w, r, ns)
	return ns, shard, ok
}

// hostError answers err with the status and code host.ErrorStatus gives it.
func hostError(w http.ResponseWriter, err error) {
	status, code := host.ErrorStatus(err)
	httpx.WriteError(w, status, code, err.Error())
}

func (s *Server) listBindings(w http.ResponseWriter, _ *http.Request) {
	out := BindingList{Bindings: []BindingInfo{}}
	for _, ns := range s.h.Namespaces() {
		out.Bindings = append(out.Bindings, bindingInfo(ns, false))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) getBinding(w http.ResponseWriter, r *http.Request) {
	ns, ok := s.namespace(w, r)
	if !ok {
		return
	}
	httpx.WriteJSON(w, http.StatusOK, bindingInfo(ns, true))
}

// putModule reads the module, then swaps it in: Namespace.Swap compiles,
// validates and initialises it before any shard switches, and keeps the
// old version serving if anything is wrong.
func (s *Server) putModule(w http.ResponseWriter, r *http.Request) {
	ns, ok := s.namespace(w, r)
	if !ok {
		return
	}
	limit := s.opts.MaxModuleBytes
	if r.ContentLength > limit {
		httpx.WriteError(w, http.StatusRequestEntityTooLarge, "module_too_large", fmt.Sprintf("module of %d bytes exceeds the %d-byte limit", r.ContentLength, limit))
		return
	}
	bin, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpx.WriteError(w, http.StatusRequestEntityTooLarge, "module_too_large", fmt.Sprintf("module exceeds the %d-byte limit", limit))
			return
		}
		httpx.WriteError(w, http.StatusBadRequest, "bad_body", "could not read the module: "+err.Error())
		return
	}
	before := ns.Current()
	t0 := time.Now()
	v, err := ns.Swap(r.Context(), bin, "push")
	d := time.Since(t0)
	log := s.log.With().Str("binding", ns.Name()).Str("remote", r.RemoteAddr).Int("size", len(bin)).Dur("duration_ms", d).Logger()
	if err != nil {
		status, code := swapErrorStatus(err)
		log.Warn().Err(err).Msg("module push refused; the current version keeps serving")
		httpx.WriteError(w, status, code, err.Error())
		return
	}
	changed := v != before
	log.Info().Str("sha256", v.SHA256()).Bool("changed", changed).Msg("module pushed")
	writeSwapResult(w, ns, v, changed, d)
}

// writeSwapResult answers a push or rollback that made v current.
func writeSwapResult(w http.ResponseWriter, ns *host.Namespace, v *host.Version, changed bool, d time.Duration) {
	httpx.WriteJSON(w, http.StatusOK, SwapResult{Binding: ns.Name(), Changed: changed, Module: *versionInfo(v), Previous: versionInfo(ns.Previous()), Duration: d.String()})
}

func swapErrorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, host.ErrInvalidModule):
		return http.StatusUnprocessableEntity, "invalid_module"
	case errors.Is(err, host.ErrClosed):
		return http.StatusServiceUnavailable, "shutting_down"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "cancelled"
	}
	return http.StatusInternalServerError, "swap_failed"
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	ns, ok := s.namespace(w, r)
	if !ok {
		return
	}
	t0 := time.Now()
	v, err := ns.Rollback(r.Context())
	if err != nil {
		if errors.Is(err, host.ErrNoPrevious) {
			httpx.WriteError(w, http.StatusConflict, "no_previous_version", err.Error())
			return
		}
		status, code := swapErrorStatus(err)
		httpx.WriteError(w, status, code, err.Error())
		return
	}
	s.log.Info().Str("binding", ns.Name()).Str("remote", r.RemoteAddr).Str("sha256", v.SHA256()).Msg("module rolled back")
	writeSwapResult(w, ns, v, true, time.Since(t0))
}

// shard resolves the {id} route variable to a shard of ns, answering 4xx
// itself. For a sharded binding it is 0..shards-1; for a per-name binding
// the object name.
func (s *Server) shard(w http.ResponseWriter, r *http.Request, ns *host.Namespace) (string, bool) {
	shard, err := url.PathUnescape(mux.Vars(r)["id"])
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "bad_shard", "shard id is not a valid path segment")
		return "", false
	}
	if n := ns.Shards(); n > 0 {
		if i, err := strconv.Atoi(shard); err != nil || i < 0 || i >= n || strconv.Itoa(i) != shard {
			httpx.WriteError(w, http.StatusNotFound, "unknown_shard", fmt.Sprintf("binding %q has shards 0..%d; no shard %q", ns.Name(), n-1, shard))
			return "", false
		}
	} else if _, err := ns.ShardFor(shard); err != nil {
		hostError(w, err)
		return "", false
	}
	return shard, true
}

// getShard lists a page of the shard's storage, read on the shard's own
// goroutine between two events.
func (s *Server) getShard(w http.ResponseWriter, r *http.Request) {
	ns, shard, ok := s.namespaceShard(w, r)
	if !ok {
		return
	}
	q, limit, ok := pageParams(w, r)
	if !ok {
		return
	}
	opts := abi.ListOptions{Prefix: q.Get("prefix"), Limit: uint32(limit + 1)}
	if q.Has("start_after") {
		opts.StartAfter, opts.HasStartAfter = q.Get("start_after"), true
	}

	type snapshot struct {
		entries []Entry
		last    string
		more    bool
		alarm   int64
	}
	sn, ok := inspect(w, r, ns, shard, func(st host.StorageView) (snapshot, error) {
		var sn snapshot
		kvs, err := st.List(opts)
		if err != nil {
			return snapshot{}, err
		}
		if len(kvs) > limit {
			kvs, sn.more = kvs[:limit], true
		}
		sn.entries = make([]Entry, 0, len(kvs))
		for _, kv := range kvs {
			sn.entries = append(sn.entries, entry(kv))
		}
		if len(kvs) > 0 {
			sn.last = kvs[len(kvs)-1].Key
		}
		at, found, err := st.GetAlarm()
		if err != nil {
			return snapshot{}, err
		}
		if found {
			sn.alarm = at
		}
		return sn, nil
	})
	if !ok {
		return
	}
	st, _ := ns.Summary(shard)
	out := ShardListing{
		Binding: ns.Name(), Shard: shard,
		Instance: instanceState(st.Live), QueueDepth: st.QueueDepth, MemoryBytes: st.MemoryBytes,
		LastEvent: timePtr(st.LastEvent), Tracing: st.Tracing,
		Prefix: opts.Prefix, Limit: limit, Entries: sn.entries, More: sn.more,
	}
	if sn.alarm > 0 {
		t := time.UnixMilli(sn.alarm).UTC()
		out.Alarm = &t
	}
	if sn.more {
		out.Next = nextPage(r, "start_after", sn.last, limit, opts.Prefix)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// inspect runs read on the shard's own goroutine between two events and
// returns what it read; it answers a failed inspection or read itself.
func inspect[T any](w http.ResponseWriter, r *http.Request, ns *host.Namespace, shard string, read func(host.StorageView) (T, error)) (T, bool) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	if err := ns.Inspect(r.Context(), shard, func(st host.StorageView) {
		v, err := read(st)
		ch <- result{v, err}
	}); err != nil {
		hostError(w, err)
		var zero T
		return zero, false
	}
	res := <-ch
	if res.err != nil {
		httpx.WriteError(w, http.StatusInternalServerError, "storage", fmt.Sprintf("read shard %s/%s: %v", ns.Name(), shard, res.err))
		return res.v, false
	}
	return res.v, true
}

// nextPage is the link to the page after one that ended at last: r's path
// with ?{afterParam}=last, the limit and the prefix (when one is set).
func nextPage(r *http.Request, afterParam, last string, limit int, prefix string) string {
	next := url.Values{afterParam: {last}, "limit": {strconv.Itoa(limit)}}
	if prefix != "" {
		next.Set("prefix", prefix)
	}
	return r.URL.EscapedPath() + "?" + next.Encode()
}

// displayKey renders a storage key for display: UTF-8 as text, anything
// else as base64; it returns the rendered key and its encoding.
func displayKey(key string) (string, string) {
	if utf8.ValidString(key) {
		return key, "utf8"
	}
	return base64.StdEncoding.EncodeToString([]byte(key)), "base64"
}

// entry renders a storage entry for display: UTF-8 as text, anything else
// as base64, values cut to ValuePreviewBytes (on a rune boundary for text).
func entry(kv abi.KV) Entry {
	e := Entry{Size: len(kv.Value)}
	e.Key, e.KeyEncoding = displayKey(kv.Key)
	v := kv.Value
	if utf8.Valid(v) {
		if len(v) > ValuePreviewBytes {
			cut := ValuePreviewBytes
			for cut > 0 && !utf8.RuneStart(v[cut]) {
				cut--
			}
			v, e.Truncated = v[:cut], true
		}
		e.Value, e.ValueEncoding = string(v), "utf8"
		return e
	}
	if len(v) > ValuePreviewBytes {
		v, e.Truncated = v[:ValuePreviewBytes], true
	}
	e.Value, e.ValueEncoding = base64.StdEncoding.EncodeToString(v), "base64"
	return e
}

func (s *Server) reconcile(w http.ResponseWriter, r *http.Request) {
	if s.opts.Reconcile == nil {
		httpx.WriteError(w, http.StatusNotFound, "reconcile_unavailable", "counter reconciliation is not available on this host (no edge API with counters is configured)")
		return
	}
	s.runJob(w, r, "reconcile-counters", "reconcile", s.opts.Reconcile)
}

// runJob runs job for r and answers its JobResult: 409 <code>_busy when
// another host runs it (ErrJobBusy), 500 <code>_failed when it failed.
func (s *Server) runJob(w http.ResponseWriter, r *http.Request, job, code string, run func(context.Context) (any, error)) {
	t0 := time.Now()
	res, err := run(r.Context())
	d := time.Since(t0)
	if errors.Is(err, ErrJobBusy) {
		s.log.Info().Err(err).Msg(job + " job skipped")
		httpx.WriteError(w, http.StatusConflict, code+"_busy", err.Error())
		return
	}
	if err != nil {
		s.log.Error().Err(err).Dur("duration_ms", d).Msg(job + " job failed")
		httpx.WriteError(w, http.StatusInternalServerError, code+"_failed", err.Error())
		return
	}
	s.log.Info().Dur("duration_ms", d).Str("remote", r.RemoteAddr).Msg(job + " job done")
	httpx.WriteJSON(w, http.StatusOK, JobResult{Job: job, Result: res, Duration: d.String()})
}

// ErrJobBusy is matched (errors.Is) by a job's error when another host
// runs the job (a fleet's reconcileCounters): answered 409.
var ErrJobBusy = errors.New("job busy elsewhere")

// maxDrainWait bounds ?wait= of POST /admin/jobs/drain.
const maxDrainWait = 10 * time.Minute

// drain runs the drain job: on a host of a POP (Options.Cluster) it
// leaves the POP, unless ?leave=0 asks for the buffer flush alone (every
// buffer shard of the POP, through their owners: what a check of the
// POP's SQL wants, the host staying a member); elsewhere the buffer flush.
func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	job := s.opts.Drain
	switch leave := r.URL.Query().Get("leave"); {
	case leave != "" && leave != "0" && leave != "1":
		httpx.WriteError(w, http.StatusBadRequest, "bad_leave", "leave must be 0 or 1")
		return
	case s.opts.Cluster != nil && leave != "0":
		job = s.opts.Cluster.Leave
	}
	if job == nil {
		httpx.WriteError(w, http.StatusNotFound, "drain_unavailable", "draining is not available on this host (no edge API is configured)")
		return
	}
	wait := 30 * time.Second
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxDrainWait {
			httpx.WriteError(w, http.StatusBadRequest, "bad_wait", "wait must be a duration from 0s to "+maxDrainWait.String())
			return
		}
		wait = d
	}
	s.runJob(w, r, "drain", "drain", func(ctx context.Context) (any, error) { return job(ctx, wait) })
}
