package sdk

import "testing"

func TestSortable(t *testing.T) {
	prev := ""
	for _, v := range []uint64{0, 1, 15, 16, 255, 1 << 32, 1<<63 - 1, 1 << 63, ^uint64(0)} {
		s := string(AppendSortable(nil, v))
		if len(s) != SortableLen || s <= prev {
			t.Fatalf("AppendSortable(%d) = %q after %q", v, s, prev)
		}
		prev = s
		if got, ok := ParseSortable(s); !ok || got != v {
			t.Fatalf("ParseSortable(%q) = %d, %v", s, got, ok)
		}
	}
	for _, s := range []string{"", "0", "000000000000000g", "00000000000000000", "+000000000000001"} {
		if _, ok := ParseSortable(s); ok {
			t.Errorf("ParseSortable(%q) accepted", s)
		}
	}
}

func TestExpiryIndexKey(t *testing.T) {
	x := ExpiryIndex{Prefix: "x:"}
	k := x.Key(1767225630000, "ann")
	if k != "x:0000019b76db1d30ann" {
		t.Fatalf("Key = %q", k)
	}
	if at, id, ok := x.parse(k); !ok || at != 1767225630000 || id != "ann" {
		t.Fatalf("parse(%q) = %d %q %v", k, at, id, ok)
	}
	for _, bad := range []string{"x:0000019b76db1d30", "y:0000019b76db1d30ann", "x:0000019b76db1d3zann"} {
		if _, _, ok := x.parse(bad); ok {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
	if x.Key(1, "b") >= x.Key(2, "a") {
		t.Fatal("keys do not sort by expiry")
	}
}
