package edge

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/internal/ssrf"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxProxyURL bounds the url parameter.
const maxProxyURL = 8 << 10

// proxyClient fetches upstream URLs under the SSRF guard.
type proxyClient struct {
	cfg       ProxyConfig
	guard     *ssrf.Guard
	transport *http.Transport
	client    *http.Client
	// reqHeaders are forwarded upstream; dropHeaders never come back.
	reqHeaders, dropHeaders []string
}

// errTooManyRedirects is returned when an upstream redirects too often.
var errTooManyRedirects = errors.New("too many redirects")

func newProxyClient(cfg ProxyConfig) (*proxyClient, error) {
	g, err := ssrf.New(cfg.AllowHosts)
	if err != nil {
		return nil, fmt.Errorf("allow_hosts: %w", err)
	}
	tr := &http.Transport{
		Proxy:                  nil, // never via an environment proxy: it would dial for us, unchecked
		DialContext:            g.DialContext(cfg.DialTimeout),
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    10,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  cfg.Timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	pc := &proxyClient{cfg: cfg, guard: g, transport: tr,
		// Client headers forwarded upstream; everything else (Authorization,
		// Cookie, the trusted user header, X-Forwarded-*) stays here.
		reqHeaders: []string{
			"Accept", "Accept-Encoding", "Accept-Language", "Cache-Control", "Content-Encoding",
			"Content-Language", "Content-Type", "If-Match", "If-Modified-Since", "If-None-Match",
			"If-Range", "If-Unmodified-Since", "Pragma", "Range", "User-Agent",
		},
		// Upstream headers never passed on: hop-by-hop fields, and fields
		// that would act on our origin.
		dropHeaders: []string{
			"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade",
			"Set-Cookie", "Set-Cookie2", "Strict-Transport-Security", "Alt-Svc", "Clear-Site-Data",
			"Content-Security-Policy", "Content-Security-Policy-Report-Only",
			"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
			"Access-Control-Allow-Methods", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
		},
	}
	pc.client = &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if cfg.MaxRedirects < 0 {
				return http.ErrUseLastResponse
			}
			if len(via) > cfg.MaxRedirects {
				return errTooManyRedirects
			}
			return g.CheckURL(req.URL)
		},
	}
	return pc, nil
}

func (pc *proxyClient) close() { pc.transport.CloseIdleConnections() }

// serveProxy is GET|POST /proxy?url=<absolute http(s) URL>.
func (a *API) serveProxy(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()["url"]
	if len(q) != 1 || q[0] == "" {
		writeError(w, http.StatusBadRequest, "bad_url", "want exactly one url query parameter (an absolute http or https URL)")
		return
	}
	if len(q[0]) > maxProxyURL {
		writeError(w, http.StatusBadRequest, "bad_url", fmt.Sprintf("url longer than %d bytes", maxProxyURL))
		return
	}
	target, err := url.Parse(q[0])
	if err != nil || !target.IsAbs() {
		writeError(w, http.StatusBadRequest, "bad_url", "url must be an absolute http or https URL")
		return
	}
	target.Fragment, target.RawFragment = "", ""
	if err := a.proxy.guard.CheckURL(target); err != nil {
		a.proxyError(w, r, err)
		return
	}
	if r.ContentLength > a.cfg.Proxy.MaxRequestBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", a.cfg.Proxy.MaxRequestBytes))
		return
	}

	buckets := []bucket{
		{Policy: "user", Key: "user:" + userFrom(r), Limit: a.cfg.Proxy.UserLimit},
		{Policy: "ip", Key: "ip:" + a.clientIP(r), Limit: a.cfg.Proxy.IPLimit},
		{Policy: "host", Key: "host:" + strings.ToLower(strings.TrimSuffix(target.Hostname(), ".")), Limit: a.cfg.Proxy.HostLimit},
	}
	d := a.limiter.check(r.Context(), buckets)
	setRateLimitHeaders(w.Header(), buckets, d, a.now())
	if !d.Allowed {
		var over []string
		for _, b := range d.Buckets {
			if b.RetryAfter > 0 {
				over = append(over, b.Policy)
			}
		}
		writeError(w, http.StatusTooManyRequests, "rate_limited", "rate limit exceeded ("+strings.Join(over, ", ")+"); retry after "+w.Header().Get("Retry-After")+" s")
		return
	}
	a.forward(w, r, target)
}

// clientIP is the peer address, or with trust_forwarded_for the last
// X-Forwarded-For entry (the one our trusted proxy appended).
func (a *API) clientIP(r *http.Request) string {
	if a.cfg.Proxy.TrustForwardedFor {
		if vals := r.Header.Values("X-Forwarded-For"); len(vals) > 0 {
			parts := strings.Split(vals[len(vals)-1], ",")
			if ip, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
				return ip.Unmap().WithZone("").String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().WithZone("").String()
	}
	return "unknown"
}

// forward sends the request upstream and streams the answer back.
func (a *API) forward(w http.ResponseWriter, r *http.Request, target *url.URL) {
	var body io.Reader
	if r.Method == http.MethodPost && r.Body != nil {
		body = http.MaxBytesReader(w, r.Body, a.cfg.Proxy.MaxRequestBytes)
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, target.String(), body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_url", "url: "+err.Error())
		return
	}
	if body != nil {
		out.ContentLength = r.ContentLength
		if out.ContentLength == 0 {
			out.Body, out.ContentLength = http.NoBody, 0
		}
	}
	for _, h := range a.proxy.reqHeaders {
		for _, v := range r.Header.Values(h) {
			out.Header.Add(h, v)
		}
	}
	resp, err := a.proxy.client.Do(out)
	if err != nil {
		a.proxyError(w, r, err)
		return
	}
	defer resp.Body.Close()
	limit := a.cfg.Proxy.MaxResponseBytes
	if resp.ContentLength > limit {
		a.m.refused.WithLabelValues("too_large").Inc()
		writeError(w, http.StatusBadGateway, "upstream_too_large", fmt.Sprintf("upstream response of %d bytes exceeds %d", resp.ContentLength, limit))
		return
	}
	h := w.Header()
	for _, f := range connectionFields(resp.Header) {
		resp.Header.Del(f)
	}
	for _, f := range a.proxy.dropHeaders {
		resp.Header.Del(f)
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox")
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return
	}
	if err := a.stream(w, resp.Body, limit); err != nil {
		// The status is sent: the only honest signal left is to cut the
		// connection, so the client sees a truncated response.
		a.log.Warn().Str("url", redactURL(target)).Err(err).Msg("proxy: upstream body aborted")
		panic(http.ErrAbortHandler)
	}
}

// stream copies body to w, flushing as it goes, up to limit bytes.
func (a *API) stream(w http.ResponseWriter, body io.Reader, limit int64) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := body.Read(buf)
		if k > 0 {
			n += int64(k)
			if n > limit {
				a.m.refused.WithLabelValues("too_large").Inc()
				return fmt.Errorf("upstream body exceeds %d bytes", limit)
			}
			if _, werr := w.Write(buf[:k]); werr != nil {
				return fmt.Errorf("write to client: %w", werr)
			}
			_ = rc.Flush()
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read upstream: %w", err)
		}
	}
}

// connectionFields are the header names listed in Connection (hop-by-hop).
func connectionFields(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}

// proxyError answers a failed upstream exchange.
func (a *API) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	var fe *ssrf.ForbiddenAddressError
	var be *ssrf.BadURLError
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &fe):
		a.m.refused.WithLabelValues(fe.Reason).Inc()
		a.log.Warn().Str("addr", fe.Addr).Str("reason", fe.Reason).Str("user", userFrom(r)).Msg("proxy: refused address")
		writeError(w, http.StatusForbidden, "forbidden_address", fe.Error())
	case errors.As(err, &be):
		a.m.refused.WithLabelValues("bad_url").Inc()
		writeError(w, http.StatusBadRequest, "bad_url", be.Error())
	case errors.Is(err, errTooManyRedirects):
		a.m.refused.WithLabelValues("redirects").Inc()
		writeError(w, http.StatusBadGateway, "too_many_redirects", fmt.Sprintf("upstream redirected more than %d times", a.cfg.Proxy.MaxRedirects))
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", a.cfg.Proxy.MaxRequestBytes))
	case r.Context().Err() != nil:
		writeError(w, 499, "client_closed", "client closed the request")
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		a.m.refused.WithLabelValues("timeout").Inc()
		writeError(w, http.StatusGatewayTimeout, "upstream_timeout", "upstream did not answer in time")
	default:
		a.m.refused.WithLabelValues("unreachable").Inc()
		// The cause (a resolver's address, an internal host name) is for the
		// log, not for the client.
		id := httpx.WriteInternal(w, http.StatusBadGateway, "upstream_unreachable", "upstream request failed")
		a.log.Warn().Err(err).Str("request_id", id).Str("user", userFrom(r)).Msg("proxy: upstream unreachable")
	}
}

// redactURL drops the query of a URL for logs (it may carry secrets).
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.User = "", nil
	return c.String()
}
