package ssrf

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

func TestBlockedAddresses(t *testing.T) {
	g, err := New([]string{"127.0.0.1:9000"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{
		"127.0.0.1": "loopback", "::1": "loopback", "::ffff:127.0.0.1": "loopback",
		"0.0.0.0": "unspecified", "::": "unspecified", "0.1.2.3": "this-network",
		"10.1.2.3": "private", "172.16.0.1": "private", "192.168.0.1": "private", "fc00::1": "private",
		"169.254.169.254": "metadata", "fd00:ec2::254": "metadata", "169.254.1.1": "link-local", "fe80::1": "link-local",
		"100.64.0.1": "cgnat", "224.0.0.1": "multicast", "ff02::1": "multicast", "255.255.255.255": "broadcast",
		"240.0.0.1": "reserved", "64:ff9b::7f00:1": "nat64-loopback", "2002:7f00:1::": "6to4-loopback",
		"2002:a00:1::": "6to4-private", "192.0.2.1": "documentation",
		"8.8.8.8": "", "1.1.1.1": "", "2606:4700:4700::1111": "", "64:ff9b::808:808": "",
	} {
		if got := g.Blocked(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %q, want %q", addr, got, want)
		}
	}
	if !g.Allowed("127.0.0.1:9000") || g.Allowed("127.0.0.1:9001") || g.Allowed("localhost:9000") {
		t.Fatal("allow list")
	}
}

// TestBlockedAddressesIPv4Mapped: every IPv4 address has an IPv4-mapped
// IPv6 form (::ffff:a.b.c.d) that reaches the same host; the guard must
// judge each alike, for every blocked range and for public addresses.
func TestBlockedAddressesIPv4Mapped(t *testing.T) {
	g, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v4 := range []string{
		"127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.0.1",
		"169.254.169.254", "169.254.1.1", "100.64.0.1", "100.127.255.254", "100.100.100.200", "224.0.0.1", "239.255.255.255",
		"255.255.255.255", "240.0.0.1", "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1",
		"8.8.8.8", "1.1.1.1",
	} {
		a := netip.MustParseAddr(v4)
		mapped := netip.AddrFrom16(a.As16())
		want := g.Blocked(a)
		if got := g.Blocked(mapped); got != want {
			t.Errorf("%s is %q but its mapped form %s is %q", v4, want, mapped, got)
		}
		if want == "" && v4 != "8.8.8.8" && v4 != "1.1.1.1" {
			t.Errorf("%s is not blocked", v4)
		}
	}
	for addr, want := range map[string]string{"::ffff:100.64.0.1": "cgnat", "::ffff:0.0.0.0": "unspecified", "::ffff:100.100.100.200": "metadata"} {
		if got := g.Blocked(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %q, want %q", addr, got, want)
		}
	}
}

// TestDialTimeGuard: a host name that resolves to a refused address is
// caught by the dialer's Control hook (the check runs on the address being
// connected, after resolution, so DNS rebinding cannot slip past).
func TestDialTimeGuard(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	g, _ := New(nil)
	dial := g.DialContext(time.Second)
	for _, addr := range []string{"localhost:" + port, "127.0.0.1:" + port} {
		_, err := dial(context.Background(), "tcp", addr)
		var fe *ForbiddenAddressError
		if !errors.As(err, &fe) || fe.Reason != "loopback" {
			t.Fatalf("dial %s: %v, want a loopback refusal", addr, err)
		}
	}
	g, _ = New([]string{"127.0.0.1:" + port})
	c, err := g.DialContext(time.Second)(context.Background(), "tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("allow-listed dial: %v", err)
	}
	c.Close()
}
