// Package ssrf is the one definition of which network addresses edgeshard
// may reach on behalf of someone else: the edge API's proxy and a shard's
// outbound fetch (host, http_fetch) dial through the same Guard. It refuses
// loopback, private, link-local, cloud metadata and other reserved
// addresses, judged on the address actually dialled (after DNS
// resolution, so rebinding cannot slip through), unless an operator lists
// the exact host:port as allowed.
package ssrf

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ForbiddenAddressError is why the guard refused to reach an address:
// loopback, private, link-local, metadata and the like.
type ForbiddenAddressError struct {
	Addr   string // the address or host refused
	Reason string // "loopback", "private", "metadata", ...
}

func (e *ForbiddenAddressError) Error() string {
	return fmt.Sprintf("address %s is not allowed (%s)", e.Addr, e.Reason)
}

// Guard decides which upstream addresses may be reached.
type Guard struct {
	allow    map[string]bool // canonical host:port exempt from the checks
	prefixes []reservedPrefix
	metadata []netip.Addr
	nat64    netip.Prefix
}

type reservedPrefix struct {
	p      netip.Prefix
	reason string
}

// New returns a guard that exempts the exact host:port entries of allow
// (an operator's explicit opt-in, e.g. a service on the private network)
// from the address checks.
func New(allow []string) (*Guard, error) {
	g := &Guard{allow: map[string]bool{}}
	for _, h := range allow {
		hp, err := CanonicalHostPort(h)
		if err != nil {
			return nil, fmt.Errorf("allowed address %q: %w", h, err)
		}
		g.allow[hp] = true
	}
	for _, r := range []struct{ cidr, reason string }{
		{"0.0.0.0/8", "this-network"},
		{"100.64.0.0/10", "cgnat"},
		{"192.0.0.0/24", "ietf-reserved"},
		{"192.0.2.0/24", "documentation"},
		{"198.18.0.0/15", "benchmarking"},
		{"198.51.100.0/24", "documentation"},
		{"203.0.113.0/24", "documentation"},
		{"240.0.0.0/4", "reserved"},
		{"::/96", "ipv4-compatible"},
		{"64:ff9b:1::/48", "nat64-local"},
		{"100::/64", "discard"},
		{"2001::/32", "teredo"},
		{"2001:db8::/32", "documentation"},
	} {
		g.prefixes = append(g.prefixes, reservedPrefix{netip.MustParsePrefix(r.cidr), r.reason})
	}
	g.nat64 = netip.MustParsePrefix("64:ff9b::/96")
	g.metadata = []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("fd00:ec2::254"), netip.MustParseAddr("100.100.100.200")}
	return g, nil
}

// CanonicalHostPort lower-cases host:port and writes an IPv4-mapped
// address as IPv4.
func CanonicalHostPort(hp string) (string, error) {
	host, port, err := net.SplitHostPort(strings.TrimSpace(hp))
	if err != nil {
		return "", err
	}
	if host == "" || port == "" {
		return "", fmt.Errorf("want host:port")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	return net.JoinHostPort(strings.ToLower(host), port), nil
}

// Allowed reports whether host:port is allow-listed.
func (g *Guard) Allowed(hostport string) bool {
	hp, err := CanonicalHostPort(hostport)
	return err == nil && g.allow[hp]
}

// Blocked returns why ip may not be reached, or "".
func (g *Guard) Blocked(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	for _, m := range g.metadata {
		if ip == m {
			return "metadata"
		}
	}
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	if ip.Is4() && ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return "broadcast"
	}
	for _, r := range g.prefixes {
		if r.p.Contains(ip) {
			return r.reason
		}
	}
	if ip.Is6() {
		b := ip.As16()
		// NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed an IPv4 address
		// that the network will reach: judge that one.
		if g.nat64.Contains(ip) {
			if r := g.Blocked(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})); r != "" {
				return "nat64-" + r
			}
		}
		if b[0] == 0x20 && b[1] == 0x02 {
			if r := g.Blocked(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})); r != "" {
				return "6to4-" + r
			}
		}
	}
	return ""
}

// CheckURL refuses a URL that must not be fetched, before any dial: a
// scheme other than http(s), credentials, a bad port, or a literal IP
// address that is blocked (host names are judged at dial time, after
// resolution).
func (g *Guard) CheckURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return &BadURLError{"scheme must be http or https"}
	}
	if u.User != nil {
		return &BadURLError{"credentials in the URL are not allowed"}
	}
	host := u.Hostname()
	if host == "" {
		return &BadURLError{"missing host"}
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if p, err := parsePort(port); err != nil || p == 0 {
		return &BadURLError{"invalid port " + port}
	}
	hp := net.JoinHostPort(host, port)
	if g.Allowed(hp) {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if r := g.Blocked(ip); r != "" {
			return &ForbiddenAddressError{Addr: hp, Reason: r}
		}
	}
	if h := strings.ToLower(strings.TrimSuffix(host, ".")); h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return &ForbiddenAddressError{Addr: hp, Reason: "loopback"}
	}
	return nil
}

func parsePort(s string) (int, error) {
	n := 0
	if s == "" || len(s) > 5 {
		return 0, fmt.Errorf("bad port")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad port")
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, fmt.Errorf("bad port")
	}
	return n, nil
}

// BadURLError is a URL the guard will not fetch.
type BadURLError struct{ msg string }

func (e *BadURLError) Error() string { return "url: " + e.msg }

// DialContext returns a dialer for http.Transport: it dials addr
// (host:port as in the URL). Unless addr is
// allow-listed, every address the name resolves to is checked in the
// dialer's Control hook, on the connection actually being made, so a DNS
// answer that changes between a check and the dial (rebinding) cannot
// slip through.
func (g *Guard) DialContext(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	plain := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	guarded := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return &ForbiddenAddressError{Addr: address, Reason: "unparsable"}
			}
			if r := g.Blocked(ap.Addr()); r != "" {
				return &ForbiddenAddressError{Addr: address, Reason: r}
			}
			return nil
		}}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if g.Allowed(addr) {
			return plain.DialContext(ctx, network, addr)
		}
		return guarded.DialContext(ctx, network, addr)
	}
}
