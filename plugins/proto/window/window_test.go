package window

import (
	"math/rand/v2"
	"testing"
)

// TestRetryAfterIsExact checks RetryAfter against a brute-force search: at
// now+retry the request is allowed, one millisecond earlier it is not.
func TestRetryAfterIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		w := int64(1000 + rng.IntN(4)*1000)
		limit := int64(1 + rng.IntN(20))
		cost := int64(1 + rng.IntN(int(limit)))
		start := int64(rng.IntN(1000)) * w
		st := Window{W: w, Start: start, Prev: int64(rng.IntN(int(limit) + 3)), Cur: int64(rng.IntN(int(limit) + 1)), Last: start}
		now := start + int64(rng.IntN(int(w)))
		allowedAt := func(t int64) bool {
			s, _ := Roll(st, true, t, w)
			return s.Allows(t, limit, cost)
		}
		r := st.RetryAfter(now, limit, cost)
		if r < 0 || r > 2*w {
			t.Fatalf("%+v now=%d limit=%d cost=%d: retry %d out of range", st, now, limit, cost, r)
		}
		if !allowedAt(now + r) {
			t.Fatalf("%+v now=%d limit=%d cost=%d: not allowed after retry %d", st, now, limit, cost, r)
		}
		if r > 0 && allowedAt(now+r-1) {
			t.Fatalf("%+v now=%d limit=%d cost=%d: already allowed 1 ms before retry %d", st, now, limit, cost, r)
		}
		if r == 0 && !allowedAt(now) {
			t.Fatalf("retry 0 but not allowed")
		}
	}
}

func TestRollShiftsWindows(t *testing.T) {
	st := Window{W: 1000, Start: 5000, Prev: 7, Cur: 3, Last: 5500}
	cases := []struct {
		now       int64
		start     int64
		prev, cur int64
		wantFresh bool
		w         int64
	}{
		{now: 5999, start: 5000, prev: 7, cur: 3, w: 1000},
		{now: 6000, start: 6000, prev: 3, cur: 0, w: 1000},
		{now: 7000, start: 7000, prev: 0, cur: 0, w: 1000},
		{now: 4000, start: 5000, prev: 7, cur: 3, w: 1000}, // clock went back
		{now: 6000, start: 6000, prev: 0, cur: 0, w: 2000, wantFresh: true},
	}
	for _, c := range cases {
		got, fresh := Roll(st, true, c.now, c.w)
		if got.Start != c.start || got.Prev != c.prev || got.Cur != c.cur || fresh != c.wantFresh {
			t.Errorf("Roll(now=%d, w=%d) = %+v fresh=%v, want start %d prev %d cur %d fresh %v", c.now, c.w, got, fresh, c.start, c.prev, c.cur, c.wantFresh)
		}
	}
}

func TestEstimateWeighsPreviousWindow(t *testing.T) {
	st := Window{W: 10000, Start: 20000, Prev: 10, Cur: 0}
	// 2.5 s into the window, 75 % of the previous window still overlaps.
	if got := st.Estimate(22500); got != 7.5 {
		t.Fatalf("estimate = %v, want 7.5", got)
	}
	if !st.Allows(22500, 10, 2) || st.Allows(22500, 10, 3) {
		t.Fatal("7.5 used of 10: 2 more fit, 3 do not")
	}
	if r := st.Remaining(22500, 10); r != 2 {
		t.Fatalf("remaining = %d, want 2", r)
	}
}

func TestStateRoundTrip(t *testing.T) {
	st := Window{W: 60000, Start: 1767225600000, Prev: 4, Cur: 9, Last: 1767225612345}
	got, err := DecodeWindow(string(st.Encode(nil)))
	if err != nil || got != st {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range []string{"", "1,2,3,4", "60000,a,0,0,0", "10,0,0,0,0", "60000,0,0,0,0,0"} {
		if _, err := DecodeWindow(bad); err == nil {
			t.Errorf("DecodeWindow(%q) accepted", bad)
		}
	}
}
