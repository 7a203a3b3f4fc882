package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/internal/ssrf"
)

// Outbound fetch (http_fetch): a shard of a binding with a FetchConfig
// sends HTTP(S) requests to the hosts the binding allows, dialled through
// the same address guard as the edge API's proxy (internal/ssrf), with a
// timeout and a cap on the response body.

// FetchConfig is what a binding's shards may fetch.
type FetchConfig struct {
	// Hosts are the destinations allowed: a host name or IP address
	// ("api.example.com", any port), with a port ("api.example.com:8443",
	// that port only), or "*.example.com" (any name under example.com, not
	// example.com itself). Matching ignores case and a trailing dot.
	Hosts []string
	// AllowPrivate lists exact host:port destinations the address guard
	// lets through although they are loopback, private or otherwise
	// reserved (a service on the operator's own network, a test server on
	// 127.0.0.1): an explicit opt-in, the edge proxy's allow_hosts rule.
	// Each is also an allowed destination.
	AllowPrivate []string
	// Timeout bounds one fetch, from the dial to the last byte of the body
	// (default 5s); the calling event's deadline bounds it too.
	Timeout time.Duration
	// MaxResponseBytes caps a response body (default 1 MiB, at most
	// abi.MaxResponseBody): past it the fetch fails with ErrnoTooLarge.
	MaxResponseBytes int64
}

const (
	defaultFetchTimeout  = 5 * time.Second
	defaultFetchMaxBytes = 1 << 20
)

// checkOutbound validates a binding's Calls and Fetch.
func checkOutbound(cfg Config, b Binding) error {
	known := map[string]bool{}
	for _, o := range cfg.Bindings {
		known[o.Name] = true
	}
	for _, c := range b.Calls {
		if !known[c] {
			return fmt.Errorf("calls %q: no such binding", c)
		}
	}
	if b.Fetch == nil {
		return nil
	}
	_, err := newFetcher(b.Name, b.Fetch)
	return err
}

// fetcher makes one binding's outbound requests.
type fetcher struct {
	binding  string
	cfg      FetchConfig
	guard    *ssrf.Guard
	hosts    []hostPattern
	client   *http.Client
	maxBytes int64
}

// hostPattern is one entry of FetchConfig.Hosts.
type hostPattern struct {
	host   string // lower case, no trailing dot; "*.x" matches names under x
	port   string // "" for any
	suffix bool
}

func parseHostPattern(s string) (hostPattern, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	var p hostPattern
	if strings.ContainsAny(s, "/?#@") {
		return p, fmt.Errorf("want a host name or address, host:port, or *.domain (no scheme or path)")
	}
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return p, fmt.Errorf("bad port %q", port)
		}
		host, p.port = h, port
	}
	host = strings.TrimSuffix(host, ".")
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		host, p.suffix = rest, true
	}
	if host == "" || strings.ContainsAny(host, "*/?#@ []") {
		return p, fmt.Errorf("want a host name or address, host:port, or *.domain")
	}
	p.host = host
	return p, nil
}

func (p hostPattern) match(host, port string) bool {
	if p.port != "" && p.port != port {
		return false
	}
	if p.suffix {
		return strings.HasSuffix(host, "."+p.host)
	}
	return host == p.host
}

func newFetcher(binding string, cfg *FetchConfig) (*fetcher, error) {
	f := &fetcher{binding: binding, cfg: *cfg, maxBytes: cfg.MaxResponseBytes}
	if f.cfg.Timeout <= 0 {
		f.cfg.Timeout = defaultFetchTimeout
	}
	switch {
	case f.maxBytes <= 0:
		f.maxBytes = defaultFetchMaxBytes
	case f.maxBytes > abi.MaxResponseBody:
		return nil, fmt.Errorf("fetch max response bytes %d exceeds %d", f.maxBytes, abi.MaxResponseBody)
	}
	for _, h := range cfg.Hosts {
		p, err := parseHostPattern(h)
		if err != nil {
			return nil, fmt.Errorf("fetch host %q: %w", h, err)
		}
		f.hosts = append(f.hosts, p)
	}
	g, err := ssrf.New(cfg.AllowPrivate)
	if err != nil {
		return nil, fmt.Errorf("fetch allow private: %w", err)
	}
	f.guard = g
	tr := &http.Transport{
		Proxy:                  nil, // never through an environment proxy: it would dial for us, unchecked
		DialContext:            g.DialContext(f.cfg.Timeout),
		ForceAttemptHTTP2:      true,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        30 * time.Second,
		TLSHandshakeTimeout:    f.cfg.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	f.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return f, nil
}

// allowed reports whether the URL's host is one the binding may fetch.
func (f *fetcher) allowed(u *url.URL) bool {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if f.guard.Allowed(net.JoinHostPort(host, port)) {
		return true
	}
	return slices.ContainsFunc(f.hosts, func(p hostPattern) bool { return p.match(host, port) })
}

// fetch sends req (req.Path: an absolute URL) and reads the response.
// Its errors are wasm.CallErrors carrying the errno the guest gets.
func (f *fetcher) fetch(ctx context.Context, req *abi.Request) (*abi.Response, error) {
	fail := func(e abi.Errno, format string, args ...any) error {
		return &wasm.CallError{Errno: e, Err: fmt.Errorf(format, args...)}
	}
	u, err := url.Parse(req.Path)
	if err != nil || !u.IsAbs() {
		return nil, fail(abi.ErrnoInvalid, "fetch: %q is not an absolute http or https URL", req.Path)
	}
	u.Fragment, u.RawFragment = "", ""
	if err := f.guard.CheckURL(u); err != nil {
		return nil, f.classify(ctx, err)
	}
	if !f.allowed(u) {
		return nil, fail(abi.ErrnoRefused, "fetch: host %s is not allowed for binding %s (its fetch hosts: %s)", u.Host, f.binding, strings.Join(f.cfg.Hosts, ", "))
	}
	if strings.EqualFold(req.Method, http.MethodConnect) {
		return nil, fail(abi.ErrnoInvalid, "fetch: method CONNECT is not allowed (it would open a tunnel)")
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, req.Method, u.String(), bytes.NewReader(req.Body))
	if err != nil {
		return nil, fail(abi.ErrnoInvalid, "fetch: %v", err)
	}
	for _, h := range req.Header {
		if hopByHop(h.Name) || strings.EqualFold(h.Name, "Host") {
			continue // the host owns framing and the destination
		}
		hr.Header.Add(h.Name, h.Value)
	}
	resp, err := f.client.Do(hr)
	if err != nil {
		return nil, f.classify(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBytes+1))
	if err != nil {
		return nil, f.classify(ctx, err)
	}
	if int64(len(body)) > f.maxBytes {
		return nil, fail(abi.ErrnoTooLarge, "fetch %s: response body exceeds %d bytes (fetch max response bytes)", u.Redacted(), f.maxBytes)
	}
	out := &abi.Response{Status: resp.StatusCode, Body: body}
	names := slices.Sorted(maps.Keys(resp.Header))
	for _, name := range names {
		for _, v := range resp.Header[name] {
			out.Header = append(out.Header, abi.Header{Name: name, Value: v})
		}
	}
	return out, nil
}

// classify gives a failed fetch its errno: refused by the guard, a bad
// URL, a deadline (the fetch's timeout or the event's), or the network.
func (f *fetcher) classify(ctx context.Context, err error) error {
	var fe *ssrf.ForbiddenAddressError
	var be *ssrf.BadURLError
	var ne net.Error
	e := abi.ErrnoNetwork
	switch {
	case errors.As(err, &fe):
		e = abi.ErrnoRefused
		err = fmt.Errorf("fetch refused: %w", fe)
	case errors.As(err, &be):
		e = abi.ErrnoInvalid
	case ctx.Err() != nil, errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		e = abi.ErrnoDeadline
		err = fmt.Errorf("fetch timed out (fetch timeout %s, or the event's deadline): %w", f.cfg.Timeout, err)
	}
	return &wasm.CallError{Errno: e, Err: err}
}

// FetchHTTP implements wasm.Env: an outbound request of a binding that
// has a FetchConfig.
func (a *actor) FetchHTTP(ctx context.Context, req *abi.Request) (*abi.Response, error) {
	var resp *abi.Response
	err := fmt.Errorf("%w: binding %s has no fetch hosts", wasm.ErrNotGranted, a.ns.name)
	if a.ns.fetch != nil {
		resp, err = a.ns.fetch.fetch(ctx, req)
	}
	a.ns.h.outm.fetches.WithLabelValues(a.ns.name, outcome(err)).Inc()
	return resp, err
}
