package host

import (
	"testing"
	"time"
)

// TestAlarmRetryPolicy: backoff from 2 s doubling, six retries, then none.
func TestAlarmRetryPolicy(t *testing.T) {
	p := alarmRetry{retries: 6, backoff: 2 * time.Second}
	now := time.Unix(1000, 0)
	for retry, want := range []time.Duration{2, 4, 8, 16, 32, 64} {
		at, ok := p.next(now, retry)
		if !ok || at.Sub(now) != want*time.Second {
			t.Fatalf("retry %d: next at +%v (ok %v), want +%ds", retry, at.Sub(now), ok, want)
		}
	}
	if _, ok := p.next(now, 6); ok {
		t.Fatal("a seventh retry was allowed")
	}
}
