// Package edge is edgeshard's edge API: the host-side HTTP handlers of the
// three pipelines of the seed (proxy rate limits, runtime-event ingest and
// social counters), with their rollout modes, fallbacks and log codes, plus
// the reconcileCounters job.
//
// Every write path follows one rule: a 2xx answer is given only once the
// write is durable somewhere (in a shard's storage or in SQL). Fallbacks log
// the seed's codes:
//
//	E-VIBECODR-0308  rate-limit shard failed, SQL proxy_rate_limits used
//	E-VIBECODR-0310  SQL failed too, the in-memory limiter used
//	E-VIBECODR-2137  runtime-event shard enqueue failed, inline SQL insert used
//	E-VIBECODR-2138  no durable path accepted the events (503)
//	E-VIBECODR-2144  counter shard enqueue failed, legacy SQL update used
//	E-VIBECODR-2145  the legacy SQL update failed too (503)
package edge

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Log codes of the seed (see the package documentation).
const (
	CodeRateLimitSQL         = "E-VIBECODR-0308"
	CodeRateLimitMemory      = "E-VIBECODR-0310"
	CodeEventEnqueueFailed   = "E-VIBECODR-2137"
	CodeEventFallbackFailed  = "E-VIBECODR-2138"
	CodeCounterEnqueueFailed = "E-VIBECODR-2144"
	CodeCounterLegacyFailed  = "E-VIBECODR-2145"
)

// Shards is a sharded namespace as the edge API uses it. *host.Namespace
// implements it; tests wrap it to inject failures. Keys route to shard
// host.HashToShard(key) % Shards(), named by its decimal index.
type Shards interface {
	Shards() int
	FetchShard(ctx context.Context, shard string, req *abi.Request) (*abi.Response, error)
}

// Deps are what the edge API runs on.
type Deps struct {
	// Host provides the namespaces named by Config's bindings, unless
	// RateLimit, Events or Counters are set. A binding that is not
	// configured fails every call (host.ErrUnknownBinding), so its
	// pipeline takes its fallback.
	Host                       *host.Host
	RateLimit, Events, Counter Shards
	// DB is the SQL database of the fallbacks, the legacy paths and the
	// source rows (likes, follows). Required.
	DB *sqldb.DB
	// Logger receives the pipeline logs (component=edge).
	Logger zerolog.Logger
	// Now is the clock (rate-limit windows, timestamps); time.Now if nil.
	Now func() time.Time
	// Registerer receives the edge API's Prometheus collectors; nil keeps
	// them unregistered.
	Registerer prometheus.Registerer
}

// API serves the edge routes. Create it with New.
type API struct {
	cfg     Config
	log     zerolog.Logger
	now     func() time.Time
	db      *sql.DB
	ratel   Shards
	events  Shards
	counter Shards
	auth    *authenticator
	limiter *limiter
	proxy   *proxyClient
	m       *metrics
	guard   *sqlGuard
	sqlDB   *sqldb.DB

	// reconcileMu serialises reconcile runs. Counter writes never wait for
	// one: fences order them (reconcile.go).
	reconcileMu sync.Mutex

	closeOnce sync.Once
}

// New validates cfg and builds the API. It logs a warning when the user id
// is trusted from a header or a binding is missing.
func New(cfg Config, deps Deps) (*API, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	if deps.DB == nil {
		return nil, fmt.Errorf("edge: sql database %q is required", cfg.SQLBinding)
	}
	a := &API{cfg: cfg, log: deps.Logger.With().Str("component", "edge").Logger(), now: deps.Now, db: deps.DB.SQL(), sqlDB: deps.DB}
	a.guard = &sqlGuard{now: time.Now, onChange: func(open bool) {
		if open {
			a.log.Error().Int("failures", sqlTripAfter).Dur("cooldown_ms", sqlCooldown).
				Msg("SQL database known down: skipping it (fallbacks and 503s at once) until a retry succeeds")
		} else {
			a.log.Info().Msg("SQL database answers again")
		}
	}}
	if a.now == nil {
		a.now = time.Now
	}
	a.ratel = a.resolve(deps.Host, deps.RateLimit, cfg.RateLimitBinding, "proxy rate limits use SQL ("+CodeRateLimitSQL+")")
	a.events = a.resolve(deps.Host, deps.Events, cfg.EventBinding, "runtime events are written inline ("+CodeEventEnqueueFailed+")")
	a.counter = a.resolve(deps.Host, deps.Counter, cfg.CounterBinding, "counters use the legacy SQL update ("+CodeCounterEnqueueFailed+")")
	var err error
	if a.m, err = newMetrics(deps.Registerer); err != nil {
		return nil, fmt.Errorf("edge: metrics: %w", err)
	}
	a.auth = newAuthenticator(cfg.Auth, a.now)
	if cfg.Auth.TrustUserHeader != "" {
		a.log.Warn().Str("header", cfg.Auth.TrustUserHeader).
			Msg("auth: trusting the user id from a request header; only safe behind a gateway that sets it and strips it from clients")
	}
	if cfg.Auth.JWTSecret != "" && len(cfg.Auth.JWTSecret) < 32 {
		a.log.Warn().Int("bytes", len(cfg.Auth.JWTSecret)).Msg("auth: jwt_secret is shorter than 32 bytes; HS256 wants at least 32")
	}
	a.limiter = newLimiter(a)
	if a.proxy, err = newProxyClient(cfg.Proxy); err != nil {
		return nil, fmt.Errorf("edge: proxy: %w", err)
	}
	a.log.Info().Str("runtime_event_mode", string(cfg.EventMode)).Str("counter_mode", string(cfg.CounterMode)).
		Str("proxy_user_limit", cfg.Proxy.UserLimit.String()).Str("proxy_ip_limit", cfg.Proxy.IPLimit.String()).
		Str("proxy_host_limit", cfg.Proxy.HostLimit.String()).Msg("edge API configured")
	return a, nil
}

// resolve picks the Shards of a binding: the explicit one, else the host's
// namespace, else one that fails every call.
func (a *API) resolve(h *host.Host, explicit Shards, binding, consequence string) Shards {
	if explicit != nil {
		return explicit
	}
	if h != nil {
		if ns, ok := h.Namespace(binding); ok {
			if ns.Shards() > 0 {
				return ns
			}
			a.log.Error().Str("binding", binding).Msg("binding has shards = 0 (one object per name); the edge API needs a sharded namespace: " + consequence)
			return missingShards{binding}
		}
	}
	a.log.Warn().Str("binding", binding).Msg("binding is not configured: " + consequence)
	return missingShards{binding}
}

// missingShards stands for a binding that is not configured.
type missingShards struct{ binding string }

func (m missingShards) Shards() int { return 1 }

func (m missingShards) FetchShard(context.Context, string, *abi.Request) (*abi.Response, error) {
	return nil, fmt.Errorf("%w %q", host.ErrUnknownBinding, m.binding)
}

// Config returns the effective configuration (defaults applied).
func (a *API) Config() Config { return a.cfg }

// Routes registers the edge routes on r and instruments every route of r
// (and its NotFound/MethodNotAllowed handlers, when set) with the recover
// and metrics middleware:
//
//	GET|POST   /proxy?url=...
//	POST       /runtime-events
//	PUT|DELETE /posts/{postId}/like
//	POST       /posts/{postId}/runs, /posts/{postId}/views
//	PUT|DELETE /users/{userId}/follow
//	GET        /posts/{postId}/stats, /users/{userId}/counters
func (a *API) Routes(r *mux.Router) {
	r.Use(a.middleware)
	if r.NotFoundHandler != nil {
		r.NotFoundHandler = a.instrument("unmatched", r.NotFoundHandler)
	}
	if r.MethodNotAllowedHandler != nil {
		r.MethodNotAllowedHandler = a.instrument("method_not_allowed", r.MethodNotAllowedHandler)
	}
	r.Handle("/proxy", a.authed(a.serveProxy)).Methods(http.MethodGet, http.MethodPost)
	r.Handle("/runtime-events", a.authed(a.serveRuntimeEvents)).Methods(http.MethodPost)
	r.Handle("/posts/{postId}/like", a.authed(a.serveLike)).Methods(http.MethodPut, http.MethodDelete)
	r.Handle("/posts/{postId}/runs", a.authed(a.servePostCounter("runs"))).Methods(http.MethodPost)
	r.Handle("/posts/{postId}/views", a.authed(a.servePostCounter("views"))).Methods(http.MethodPost)
	r.Handle("/users/{userId}/follow", a.authed(a.serveFollow)).Methods(http.MethodPut, http.MethodDelete)
	r.HandleFunc("/posts/{postId}/stats", a.servePostStats).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/users/{userId}/counters", a.serveUserCounters).Methods(http.MethodGet, http.MethodHead)
}

// Ready reports whether the edge API can serve: its SQL database accepts
// writes now (its file is still there, a write transaction can begin) and
// is not known down.
func (a *API) Ready(ctx context.Context) error {
	if a.guard.open() {
		return errSQLDown
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := a.sqlDB.Writable(ctx); err != nil {
		return fmt.Errorf("sql database: %w", err)
	}
	return nil
}

// Close releases the proxy's idle upstream connections. It does not close
// the host or the database, which the caller owns; it is idempotent.
func (a *API) Close() {
	a.closeOnce.Do(func() {
		a.proxy.close()
	})
}

// shardOf returns the shard index key routes to among n shards.
func shardOf(key string, n int) int {
	if n <= 1 {
		return 0
	}
	return int(host.HashToShard(key) % uint32(n))
}

// groupByShard groups items by the shard (of n) of their key, and lists
// the shards in the order their first item came.
func groupByShard[T any](items []T, n int, key func(T) string) (map[int][]T, []int) {
	groups := map[int][]T{}
	var order []int
	for _, it := range items {
		s := shardOf(key(it), n)
		if _, ok := groups[s]; !ok {
			order = append(order, s)
		}
		groups[s] = append(groups[s], it)
	}
	return groups, order
}

// ShardError is a shard's answer with a non-2xx status.
type ShardError struct {
	Status int
	Body   string
}

func (e *ShardError) Error() string {
	b := e.Body
	if len(b) > 256 {
		b = b[:256] + "…"
	}
	return "shard answered " + strconv.Itoa(e.Status) + ": " + b
}

// callShard sends one request to a shard, bounded by ShardTimeout, and
// returns a 2xx response. Write paths pass a context detached from the
// client's: a disconnecting client must not turn a write ambiguous.
func (a *API) callShard(ctx context.Context, s Shards, shard int, method, path string, body []byte) (*abi.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ShardTimeout)
	defer cancel()
	req := &abi.Request{Method: method, Path: path, Body: body}
	if body != nil {
		req.Header = []abi.Header{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}
	}
	resp, err := s.FetchShard(ctx, strconv.Itoa(shard), req)
	if err != nil {
		return nil, err
	}
	if resp.Status < 200 || resp.Status > 299 {
		return nil, &ShardError{Status: resp.Status, Body: string(resp.Body)}
	}
	return resp, nil
}

// writeError writes the error envelope.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	httpx.WriteError(w, status, code, msg)
}
