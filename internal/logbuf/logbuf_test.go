package logbuf

import (
	"strings"
	"sync"
	"testing"
)

// TestConcurrentWriters: every write of concurrent writers is kept whole.
func TestConcurrentWriters(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("line\n"))
			}
		})
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != 800 || len(b.String()) != 800*5 {
		t.Fatalf("kept %d lines in %d bytes, want 800 in 4000", got, len(b.String()))
	}
}

// TestMax: past Max bytes further writes are dropped but reported written.
func TestMax(t *testing.T) {
	b := Buffer{Max: 10}
	for range 5 {
		if n, err := b.Write([]byte("abcd")); n != 4 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got := b.String(); got != "abcdabcdabcd" {
		t.Fatalf("kept %q, want the writes up to 10 bytes", got)
	}
}
