package netdelay

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// echo serves an echo server on loopback and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// TestRoundTrip: a round trip through the proxy takes its RTT (and not
// much more), the bytes arrive whole and in order, the RTT changes for
// open connections, and Close leaves nothing running.
func TestRoundTrip(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // after the echo server's cleanup
	p, err := Start(echo(t), 40*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	ask := func(msg []byte) time.Duration {
		t.Helper()
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatal("bytes changed on the way")
		}
		return time.Since(t0)
	}
	big := bytes.Repeat([]byte("0123456789"), 20000) // several chunks each way
	if d := ask(big); d < 40*time.Millisecond || d > 400*time.Millisecond {
		t.Fatalf("round trip at 40 ms: %v", d)
	}
	p.SetRTT(0)
	ask([]byte("x")) // a chunk read before the change may still be held
	if d := ask([]byte("y")); d > 30*time.Millisecond {
		t.Fatalf("round trip at 0: %v", d)
	}
	if p.RTT() != 0 {
		t.Fatalf("RTT %v", p.RTT())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the client's connection stayed open after Close")
	}
	c.Close()
}
