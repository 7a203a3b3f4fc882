package edge

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/plugins/proto/window"
)

// Mode is a rollout mode of a pipeline (RUNTIME_EVENT_DO_MODE,
// COUNTER_DO_MODE), as in the seed's "Rollout/operations".
type Mode string

// The rollout modes.
const (
	// ModePrimary sends writes to the shard; SQL is written inline only
	// when the shard fails.
	ModePrimary Mode = "primary"
	// ModeShadow exercises the shard and writes through the legacy SQL path.
	ModeShadow Mode = "shadow"
	// ModeOff writes through the legacy SQL path only.
	ModeOff Mode = "off"
)

// ParseMode parses a mode name; "" is ModePrimary, the seed's default.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return ModePrimary, nil
	case ModePrimary, ModeShadow, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("%q: want primary, shadow or off", s)
}

// Names of the seed's rollout variables and of the JWT secret's variable.
const (
	VarEventMode   = "RUNTIME_EVENT_DO_MODE"
	VarCounterMode = "COUNTER_DO_MODE"
	EnvJWTSecret   = "EDGESHARD_JWT_SECRET"
)

// Limit is a rate limit: at most N requests per Window.
type Limit struct {
	N      int
	Window time.Duration
}

// String renders the limit as it is written in the config ("60/m").
func (l Limit) String() string {
	switch l.Window {
	case time.Second:
		return strconv.Itoa(l.N) + "/s"
	case time.Minute:
		return strconv.Itoa(l.N) + "/m"
	case time.Hour:
		return strconv.Itoa(l.N) + "/h"
	}
	return strconv.Itoa(l.N) + "/" + l.Window.String()
}

// ParseLimit parses "N/s", "N/m", "N/h" or "N/<duration>" ("100/10s").
// The window must be at least one second (the rate-limit shard's minimum)
// and at most a day.
func ParseLimit(s string) (Limit, error) {
	num, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Limit{}, fmt.Errorf("limit %q: want N/s, N/m, N/h or N/<duration>", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 1 || n > window.MaxLimit {
		return Limit{}, fmt.Errorf("limit %q: count must be an integer from 1 to 1e9", s)
	}
	var w time.Duration
	switch per = strings.TrimSpace(per); per {
	case "s", "sec", "second":
		w = time.Second
	case "m", "min", "minute":
		w = time.Minute
	case "h", "hour":
		w = time.Hour
	default:
		if w, err = time.ParseDuration(per); err != nil {
			return Limit{}, fmt.Errorf("limit %q: window must be s, m, h or a duration like 10s", s)
		}
	}
	if w < window.MinWindowMs*time.Millisecond || w > 24*time.Hour || w%time.Millisecond != 0 {
		return Limit{}, fmt.Errorf("limit %q: window must be whole milliseconds between 1s and 24h", s)
	}
	return Limit{N: n, Window: w}, nil
}

// Config is the edge API's configuration: the [edge], [auth], [proxy],
// [runtime_events], [counters] and [reconcile] tables of edgeshard.toml and
// the rollout variables. The zero value of a field takes the default of
// DefaultConfig.
type Config struct {
	// Bindings of the three shard namespaces and the SQL database.
	RateLimitBinding string
	EventBinding     string
	CounterBinding   string
	SQLBinding       string
	// ShardTimeout bounds one call to a shard before the fallback is taken.
	// It should exceed the host's event_timeout, so that a slow shard fails
	// with the host's own (unambiguous) timeout first.
	ShardTimeout time.Duration
	// SQLBudget bounds all the SQL work of one request together (not each
	// step): past it the request fails over or answers 503 (sqlguard.go).
	SQLBudget time.Duration
	// NodeID is the host's node id (not a setting of these tables: the
	// wiring gives the host's own): reconcileCounters records it with its
	// corrections.
	NodeID string

	EventMode   Mode
	CounterMode Mode

	Auth      AuthConfig
	Proxy     ProxyConfig
	Events    EventsConfig
	Reconcile ReconcileConfig
}

// AuthConfig configures how a caller's user id is established.
type AuthConfig struct {
	// JWTSecret verifies "Authorization: Bearer <JWT>" (HS256, sub = user id).
	JWTSecret string
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer   string
	Audience string
	// Leeway tolerates clock skew when checking exp/nbf/iat.
	Leeway time.Duration
	// AllowNoExp accepts tokens without an exp claim (refused by default:
	// such a token never expires).
	AllowNoExp bool
	// TrustUserHeader, when set (e.g. "X-User-Id"), takes the user id from
	// that header as set by an authenticating gateway in front of us.
	TrustUserHeader string
}

// ProxyConfig configures GET|POST /proxy.
type ProxyConfig struct {
	UserLimit Limit
	IPLimit   Limit
	HostLimit Limit
	// AllowHosts are host:port pairs exempt from the address checks
	// (e.g. an internal service, or a test upstream on 127.0.0.1).
	AllowHosts []string
	// TrustForwardedFor takes the client IP from the last X-Forwarded-For
	// entry (the one the trusted proxy in front appended).
	TrustForwardedFor bool
	Timeout           time.Duration // whole upstream exchange
	DialTimeout       time.Duration
	MaxResponseBytes  int64
	MaxRequestBytes   int64
	MaxRedirects      int
	// MemoryLimiterKeys bounds the in-memory (last resort) limiter.
	MemoryLimiterKeys int
}

// EventsConfig bounds POST /runtime-events.
type EventsConfig struct {
	MaxEvents       int
	MaxBodyBytes    int64
	MaxPayloadBytes int
}

// ReconcileConfig configures the reconcileCounters job.
type ReconcileConfig struct {
	// Interval between runs; 0 disables the ticker (the admin trigger
	// still works).
	Interval time.Duration
}

// DefaultConfig returns the defaults: the seed's binding names, primary
// modes, 60/m per user, 120/m per IP, 600/m per upstream host, 500 events
// of at most 16 KiB payload in a 1 MiB body, reconcile every 10 minutes.
func DefaultConfig() Config {
	return Config{
		RateLimitBinding: "RATE_LIMIT_SHARD",
		EventBinding:     "RUNTIME_EVENT_SHARD",
		CounterBinding:   "COUNTER_SHARD",
		SQLBinding:       "DB",
		ShardTimeout:     15 * time.Second,
		SQLBudget:        5 * time.Second,
		EventMode:        ModePrimary,
		CounterMode:      ModePrimary,
		Auth:             AuthConfig{Leeway: 30 * time.Second},
		Proxy: ProxyConfig{
			UserLimit:         Limit{60, time.Minute},
			IPLimit:           Limit{120, time.Minute},
			HostLimit:         Limit{600, time.Minute},
			Timeout:           30 * time.Second,
			DialTimeout:       5 * time.Second,
			MaxResponseBytes:  10 << 20,
			MaxRequestBytes:   1 << 20,
			MaxRedirects:      5,
			MemoryLimiterKeys: 100_000,
		},
		Events:    EventsConfig{MaxEvents: 500, MaxBodyBytes: 1 << 20, MaxPayloadBytes: 16 << 10},
		Reconcile: ReconcileConfig{Interval: 10 * time.Minute},
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	str := func(p *string, def string) {
		if *p == "" {
			*p = def
		}
	}
	str(&c.RateLimitBinding, d.RateLimitBinding)
	str(&c.EventBinding, d.EventBinding)
	str(&c.CounterBinding, d.CounterBinding)
	str(&c.SQLBinding, d.SQLBinding)
	if c.ShardTimeout <= 0 {
		c.ShardTimeout = d.ShardTimeout
	}
	if c.SQLBudget <= 0 {
		c.SQLBudget = d.SQLBudget
	}
	if c.EventMode == "" {
		c.EventMode = ModePrimary
	}
	if c.CounterMode == "" {
		c.CounterMode = ModePrimary
	}
	if c.Auth.Leeway <= 0 {
		c.Auth.Leeway = d.Auth.Leeway
	}
	p, dp := &c.Proxy, d.Proxy
	if p.UserLimit.N == 0 {
		p.UserLimit = dp.UserLimit
	}
	if p.IPLimit.N == 0 {
		p.IPLimit = dp.IPLimit
	}
	if p.HostLimit.N == 0 {
		p.HostLimit = dp.HostLimit
	}
	if p.Timeout <= 0 {
		p.Timeout = dp.Timeout
	}
	if p.DialTimeout <= 0 {
		p.DialTimeout = dp.DialTimeout
	}
	if p.MaxResponseBytes <= 0 {
		p.MaxResponseBytes = dp.MaxResponseBytes
	}
	if p.MaxRequestBytes <= 0 {
		p.MaxRequestBytes = dp.MaxRequestBytes
	}
	if p.MaxRedirects == 0 {
		p.MaxRedirects = dp.MaxRedirects
	}
	if p.MemoryLimiterKeys <= 0 {
		p.MemoryLimiterKeys = dp.MemoryLimiterKeys
	}
	if c.Events.MaxEvents <= 0 {
		c.Events.MaxEvents = d.Events.MaxEvents
	}
	if c.Events.MaxBodyBytes <= 0 {
		c.Events.MaxBodyBytes = d.Events.MaxBodyBytes
	}
	if c.Events.MaxPayloadBytes <= 0 {
		c.Events.MaxPayloadBytes = d.Events.MaxPayloadBytes
	}
	return c
}

// validate reports every problem of a defaulted Config at once,
// including a missing way to authenticate users.
func (c Config) validate() error {
	var errs []error
	if c.Auth.JWTSecret == "" && c.Auth.TrustUserHeader == "" {
		errs = append(errs, fmt.Errorf("auth: set [auth] jwt_secret (or %s) or [auth] trust_user_header", EnvJWTSecret))
	}
	return errors.Join(append(errs, c.validateSettings())...)
}

// validateSettings reports every invalid setting of a defaulted Config.
func (c Config) validateSettings() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := ParseMode(string(c.EventMode)); err != nil {
		bad("%s %w", VarEventMode, err)
	}
	if _, err := ParseMode(string(c.CounterMode)); err != nil {
		bad("%s %w", VarCounterMode, err)
	}
	if h := c.Auth.TrustUserHeader; h != "" && !validHeaderName(h) {
		bad("auth: trust_user_header = %q is not a valid header name", h)
	}
	if c.Proxy.MaxRedirects < -1 || c.Proxy.MaxRedirects > 20 {
		bad("proxy: max_redirects = %d: want 0..20 (0 follows none)", c.Proxy.MaxRedirects)
	}
	for _, h := range c.Proxy.AllowHosts {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			bad("proxy: allow_hosts entry %q: want host:port", h)
		}
	}
	if c.Events.MaxEvents > 10_000 {
		bad("runtime_events: max_events = %d: at most 10000", c.Events.MaxEvents)
	}
	if c.Reconcile.Interval < 0 {
		bad("reconcile: interval must not be negative")
	}
	return errors.Join(errs...)
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')) {
			return false
		}
	}
	return true
}

// The TOML shapes of the edge API's tables.
type (
	edgeTable struct {
		Enabled          *bool           `toml:"enabled"`
		RateLimitBinding string          `toml:"rate_limit_binding"`
		EventBinding     string          `toml:"runtime_event_binding"`
		CounterBinding   string          `toml:"counter_binding"`
		SQL              string          `toml:"sql"`
		ShardTimeout     config.Duration `toml:"shard_timeout"`
		SQLBudget        config.Duration `toml:"sql_budget"`
	}
	authTable struct {
		JWTSecret       string          `toml:"jwt_secret"`
		Issuer          string          `toml:"issuer"`
		Audience        string          `toml:"audience"`
		Leeway          config.Duration `toml:"leeway"`
		TrustUserHeader string          `toml:"trust_user_header"`
		AllowNoExp      bool            `toml:"allow_tokens_without_exp"`
	}
	proxyTable struct {
		AllowHosts        []string          `toml:"allow_hosts"`
		TrustForwardedFor bool              `toml:"trust_forwarded_for"`
		Timeout           config.Duration   `toml:"timeout"`
		DialTimeout       config.Duration   `toml:"dial_timeout"`
		MaxResponseBytes  int64             `toml:"max_response_bytes"`
		MaxRequestBytes   int64             `toml:"max_request_bytes"`
		MaxRedirects      *int              `toml:"max_redirects"`
		MemoryLimiterKeys int               `toml:"memory_limiter_keys"`
		Limits            map[string]string `toml:"limits"`
	}
	eventsTable struct {
		MaxEvents       int   `toml:"max_events"`
		MaxBodyBytes    int64 `toml:"max_body_bytes"`
		MaxPayloadBytes int   `toml:"max_payload_bytes"`
	}
	countersTable  struct{}
	reconcileTable struct {
		Interval *config.Duration `toml:"interval"`
	}
)

// ConfigTables are the top-level tables of the config file the edge API
// owns (config.File.CheckExtra).
func ConfigTables() []string {
	return []string{"edge", "auth", "proxy", "runtime_events", "counters", "reconcile"}
}

// ConfigFromFile builds the edge configuration from a loaded config file:
// its [edge], [auth], [proxy], [runtime_events], [counters] and [reconcile]
// tables, and the rollout modes from [vars] — a variable of the environment
// (lookup, usually os.LookupEnv) wins over [vars], as does
// EDGESHARD_JWT_SECRET over [auth] jwt_secret. enabled is false only when
// [edge] enabled = false. Every invalid setting is reported at once; New
// adds the check that users can authenticate at all.
func ConfigFromFile(f *config.File, lookup func(string) (string, bool)) (cfg Config, enabled bool, err error) {
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	cfg = DefaultConfig()
	var errs []error
	var et edgeTable
	var at authTable
	var pt proxyTable
	var evt eventsTable
	var ct countersTable
	var rt reconcileTable
	tables := map[string]any{"edge": &et, "auth": &at, "proxy": &pt, "runtime_events": &evt, "counters": &ct, "reconcile": &rt}
	for _, name := range ConfigTables() {
		if err := f.DecodeExtra(name, tables[name]); err != nil {
			errs = append(errs, err)
		}
	}
	enabled = et.Enabled == nil || *et.Enabled
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.RateLimitBinding, et.RateLimitBinding)
	set(&cfg.EventBinding, et.EventBinding)
	set(&cfg.CounterBinding, et.CounterBinding)
	set(&cfg.SQLBinding, et.SQL)
	if et.ShardTimeout.Duration > 0 {
		cfg.ShardTimeout = et.ShardTimeout.Duration
	}
	if et.SQLBudget.Duration > 0 {
		cfg.SQLBudget = et.SQLBudget.Duration
	}

	cfg.Auth.JWTSecret, cfg.Auth.Issuer, cfg.Auth.Audience = at.JWTSecret, at.Issuer, at.Audience
	if v, ok := lookup(EnvJWTSecret); ok && v != "" {
		cfg.Auth.JWTSecret = v
	}
	if at.Leeway.Duration > 0 {
		cfg.Auth.Leeway = at.Leeway.Duration
	}
	cfg.Auth.AllowNoExp = at.AllowNoExp
	cfg.Auth.TrustUserHeader = http.CanonicalHeaderKey(strings.TrimSpace(at.TrustUserHeader))

	p := &cfg.Proxy
	p.AllowHosts = pt.AllowHosts
	p.TrustForwardedFor = pt.TrustForwardedFor
	if pt.Timeout.Duration > 0 {
		p.Timeout = pt.Timeout.Duration
	}
	if pt.DialTimeout.Duration > 0 {
		p.DialTimeout = pt.DialTimeout.Duration
	}
	if pt.MaxResponseBytes > 0 {
		p.MaxResponseBytes = pt.MaxResponseBytes
	}
	if pt.MaxRequestBytes > 0 {
		p.MaxRequestBytes = pt.MaxRequestBytes
	}
	if pt.MaxRedirects != nil {
		switch n := *pt.MaxRedirects; {
		case n == 0 || n == -1:
			p.MaxRedirects = -1 // follow none
		default:
			p.MaxRedirects = n
		}
	}
	if pt.MemoryLimiterKeys > 0 {
		p.MemoryLimiterKeys = pt.MemoryLimiterKeys
	}
	names := slices.Sorted(maps.Keys(pt.Limits))
	for _, k := range names {
		l, err := ParseLimit(pt.Limits[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("proxy.limits.%s: %w", k, err))
			continue
		}
		switch k {
		case "user":
			p.UserLimit = l
		case "ip":
			p.IPLimit = l
		case "host":
			p.HostLimit = l
		default:
			errs = append(errs, fmt.Errorf("proxy.limits.%s: unknown bucket (want user, ip or host)", k))
		}
	}

	if evt.MaxEvents > 0 {
		cfg.Events.MaxEvents = evt.MaxEvents
	}
	if evt.MaxBodyBytes > 0 {
		cfg.Events.MaxBodyBytes = evt.MaxBodyBytes
	}
	if evt.MaxPayloadBytes > 0 {
		cfg.Events.MaxPayloadBytes = evt.MaxPayloadBytes
	}
	if rt.Interval != nil {
		cfg.Reconcile.Interval = rt.Interval.Duration
	}

	mode := func(name string, dst *Mode) {
		v := f.Vars[name]
		if ev, ok := lookup(name); ok {
			v = ev
		}
		m, err := ParseMode(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %w", name, err))
			return
		}
		*dst = m
	}
	mode(VarEventMode, &cfg.EventMode)
	mode(VarCounterMode, &cfg.CounterMode)

	if enabled {
		// Whether users can authenticate is checked by New: a config that
		// runs no edge bindings needs no [auth].
		if err := cfg.withDefaults().validateSettings(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, enabled, fmt.Errorf("edge config: %w", err)
	}
	return cfg, enabled, nil
}
