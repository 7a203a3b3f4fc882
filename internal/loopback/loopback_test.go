package loopback

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestFreeAddrIsBindable: the address is on 127.0.0.1 and can be bound.
func TestFreeAddrIsBindable(t *testing.T) {
	a, err := FreeAddr()
	if err != nil || !strings.HasPrefix(a, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q, %v", a, err)
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	p, err := FreePort()
	if err != nil || p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d, %v", p, err)
	}
	ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

// TestFreeAddrsGivesN: FreeAddrs gives n loopback addresses.
func TestFreeAddrsGivesN(t *testing.T) {
	as, err := FreeAddrs(3)
	if err != nil || len(as) != 3 {
		t.Fatalf("FreeAddrs(3) = %q, %v", as, err)
	}
	for _, a := range as {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Fatalf("FreeAddrs(3) = %q", as)
		}
	}
}
