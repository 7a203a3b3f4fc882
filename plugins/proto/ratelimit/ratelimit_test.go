package ratelimit

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/plugins/proto/window"
)

// TestLineRoundTrip: what the edge encodes, the plugin parses back.
func TestLineRoundTrip(t *testing.T) {
	lines := []Line{
		{Key: "user:alice", Limit: 60, WindowMs: 60000, Cost: 1},
		{Key: "ip:2001:db8::1", Limit: 120, WindowMs: 1000, Cost: 7},
		{Key: "host:example.com", Limit: window.MaxLimit, WindowMs: window.MaxWindowMs, Cost: 1},
	}
	var body []byte
	for _, l := range lines {
		body = l.AppendLine(body)
	}
	bs, le := ParseCheck(string(body))
	if le != nil {
		t.Fatal(le)
	}
	for i := range bs {
		if bs[i].Line != lines[i] || bs[i].No != i+1 {
			t.Fatalf("line %d: %+v, want %+v", i+1, bs[i].Line, lines[i])
		}
	}
	if got := string(Line{Key: "k", Limit: 5, WindowMs: 1000}.AppendLine(nil)); got != "k\t5\t1000\n" {
		t.Fatalf("cost 0 encodes as %q", got)
	}
}

func TestParseCheckRefuses(t *testing.T) {
	for _, c := range []struct{ body, code string }{
		{"", "empty_body"},
		{"\n\r\n", "empty_body"},
		{"user:a\t10\n", "bad_line"},
		{"user:a\t10\t60000\t1\tx\n", "bad_line"},
		{"\t10\t60000\n", "bad_key"},
		{"user:a\t0\t60000\n", "bad_limit"},
		{"user:a\tten\t60000\n", "bad_limit"},
		{"user:a\t10\t999\n", "bad_window"},
		{"user:a\t10\t604800001\n", "bad_window"},
		{"user:a\t10\t60000\t11\n", "bad_cost"},
		{"user:a\t10\t60000\t0\n", "bad_cost"},
		{"user:a\t10\t60000\nuser:a\t5\t1000\n", "duplicate_key"},
	} {
		if _, le := ParseCheck(c.body); le == nil || le.Code != c.code {
			t.Errorf("%q: %v, want %s", c.body, le, c.code)
		}
	}
	var body []byte
	for i := 0; i <= MaxBuckets; i++ {
		body = Line{Key: "k" + string(rune('A'+i%26)) + string(rune('A'+i/26)), Limit: 1, WindowMs: 1000}.AppendLine(body)
	}
	if _, le := ParseCheck(string(body)); le == nil || le.Code != "too_many_buckets" || le.Line != MaxBuckets+1 {
		t.Fatalf("%d buckets: %v", MaxBuckets+1, le)
	}
}

// TestDecideAllOrNone: a call is counted in every bucket or in none, and
// each bucket reports its own verdict.
func TestDecideAllOrNone(t *testing.T) {
	now := int64(60000)
	bs := []Bucket{
		{Line: Line{Key: "user:a", Limit: 10, WindowMs: 60000}},
		{Line: Line{Key: "ip:b", Limit: 2, WindowMs: 60000, Cost: 2}, Stored: window.Window{W: 60000, Start: 60000, Cur: 1}, Exists: true},
	}
	if Decide(bs, now) {
		t.Fatal("allowed over ip:b's limit")
	}
	if !bs[0].Allowed || bs[0].RetryAfterMs != 0 || bs[0].State.Cur != 0 || !bs[0].Fresh {
		t.Fatalf("user:a %+v", bs[0])
	}
	if bs[1].Allowed || bs[1].RetryAfterMs != 120000 || bs[1].State.Cur != 1 || bs[1].Remaining != 1 {
		t.Fatalf("ip:b %+v", bs[1])
	}
	bs[1].Cost = 1
	if !Decide(bs, now+5) || bs[0].State.Cur != 1 || bs[1].State.Cur != 2 || bs[1].Remaining != 0 || bs[0].State.Last != now+5 {
		t.Fatalf("second call %+v", bs)
	}
}

// TestReplyDecodes: the hand-written answer decodes into Reply as the
// edge reads it.
func TestReplyDecodes(t *testing.T) {
	bs := []Bucket{{Line: Line{Key: `user:"q"`, Limit: 3, WindowMs: 1000}}, {Line: Line{Key: "ip:1", Limit: 1, WindowMs: 2000}}}
	all := Decide(bs, 1767225600123)
	var rep Reply
	if err := json.Unmarshal(AppendReply(nil, all, bs), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Allowed == nil || *rep.Allowed != all || !reflect.DeepEqual(rep.Buckets, []BucketReply{bs[0].Reply(), bs[1].Reply()}) {
		t.Fatalf("%+v", rep)
	}
}

func TestStateFromRows(t *testing.T) {
	for _, c := range []struct {
		rows   []Row
		want   window.Window
		exists bool
	}{
		{nil, window.Window{}, false},
		{[]Row{{Start: 120000, WindowMs: 60000, Count: 3}}, window.Window{W: 60000, Start: 120000, Cur: 3}, true},
		{[]Row{{120000, 60000, 3}, {60000, 60000, 5}}, window.Window{W: 60000, Start: 120000, Cur: 3, Prev: 5}, true},
		{[]Row{{120000, 60000, 3}, {0, 60000, 5}}, window.Window{W: 60000, Start: 120000, Cur: 3}, true},     // not the window before
		{[]Row{{120000, 60000, 3}, {60000, 30000, 5}}, window.Window{W: 60000, Start: 120000, Cur: 3}, true}, // another length
		{[]Row{{120000, 0, 3}}, window.Window{Start: 120000, Cur: 3}, true},                                  // from before 0002
	} {
		got, ok := StateFromRows(c.rows)
		if got != c.want || ok != c.exists {
			t.Errorf("%v: %+v %v, want %+v %v", c.rows, got, ok, c.want, c.exists)
		}
	}
	// Rows without a window length start afresh.
	st, _ := StateFromRows([]Row{{120000, 0, 3}})
	if _, fresh := window.Roll(st, true, 130000, 60000); !fresh {
		t.Fatal("a row without window_ms did not start afresh")
	}
}

// TestStoreLoadAndSweep: states round-trip through the storage form; the
// cleanup alarm deletes idle or unreadable buckets and re-arms for the
// rest.
func TestStoreLoadAndSweep(t *testing.T) {
	bs := []Bucket{{Line: Line{Key: "a", Limit: 5, WindowMs: 1000}}, {Line: Line{Key: "b", Limit: 5, WindowMs: 60000}}, {Line: Line{Key: "c", Limit: 5, WindowMs: 1000}}}
	if !Decide(bs, 10_500) {
		t.Fatal("refused")
	}
	if at, ok := CleanupAt(bs); !ok || at != 10_500+2*1000+1 {
		t.Fatalf("cleanup at %d %v", at, ok)
	}
	keys := []string{KeyPrefix + "a", KeyPrefix + "b", KeyPrefix + "c"}
	kvs := []abi.KV{{Key: keys[0], Value: bs[0].State.Encode(nil)}, {Key: keys[1], Value: bs[1].State.Encode(nil)}, {Key: keys[2], Value: []byte("garbage")}}
	again := []Bucket{{Line: bs[0].Line}, {Line: bs[1].Line}, {Line: bs[2].Line}}
	var bad []string
	Load(again, keys, kvs, func(b *Bucket, err error) { bad = append(bad, b.Key) })
	if again[0].Stored != bs[0].State || again[1].Stored != bs[1].State || !again[1].Exists || again[2].Exists || len(bad) != 1 || bad[0] != "c" {
		t.Fatalf("loaded %+v, unreadable %v", again, bad)
	}
	st := &memStorage{kvs: kvs}
	deleted, kept, next, ok, err := Sweep(st, 12_501) // a: idle since 10_500 for more than two 1 s windows
	if err != nil || deleted != 2 || kept != 1 || !ok || next != 10_500+2*60000+1 ||
		!reflect.DeepEqual(st.deleted, []string{KeyPrefix + "a", KeyPrefix + "c"}) {
		t.Fatalf("deleted %d %v kept %d next %d %v %v", deleted, st.deleted, kept, next, ok, err)
	}
	if _, _, _, ok, _ := Sweep(&memStorage{}, 0); ok {
		t.Fatal("an empty sweep re-arms")
	}
}

// memStorage is a Storage over a sorted slice.
type memStorage struct {
	kvs     []abi.KV
	deleted []string
}

func (m *memStorage) List(opts abi.ListOptions) ([]abi.KV, error) {
	var out []abi.KV
	for _, kv := range m.kvs {
		if strings.HasPrefix(kv.Key, opts.Prefix) && (!opts.HasStartAfter || kv.Key > opts.StartAfter) && len(out) < int(opts.Limit) {
			out = append(out, kv)
		}
	}
	return out, nil
}

func (m *memStorage) DeleteMulti(keys []string) (int, error) {
	m.deleted = append(m.deleted, keys...)
	return len(keys), nil
}
