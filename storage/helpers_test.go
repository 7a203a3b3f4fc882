package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeshard/edgeshard/abi"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backendKind opens one kind of Backend for the contract suite. open opens
// (or reopens) the store in dir.
type backendKind struct {
	name       string
	persistent bool
	open       func(t testing.TB, dir string) Backend
}

func backendKinds() []backendKind {
	return []backendKind{
		{name: "memory", open: func(testing.TB, string) Backend { return NewMemory() }},
		{name: "badger", persistent: true, open: func(t testing.TB, dir string) Backend {
			b, err := OpenBadger(BadgerOptions{Dir: dir, SyncWrites: true})
			if err != nil {
				t.Fatalf("OpenBadger: %v", err)
			}
			return b
		}},
	}
}

var errInjected = errors.New("injected apply failure")

// testBackend wraps a Backend to count calls, hold Apply at a gate, delay
// it, or make it fail.
type testBackend struct {
	Backend

	applies atomic.Int64
	batches atomic.Int64
	gets    atomic.Int64
	lists   atomic.Int64
	entered chan struct{} // one token per Apply call

	mu    sync.Mutex
	gate  chan struct{}
	fails int
	delay time.Duration
	log   []*Batch // batches handed to the inner backend
}

func wrap(b Backend) *testBackend {
	return &testBackend{Backend: b, entered: make(chan struct{}, 1<<16)}
}

func (b *testBackend) Get(id ShardID, key string) ([]byte, bool, error) {
	b.gets.Add(1)
	return b.Backend.Get(id, key)
}

func (b *testBackend) List(id ShardID, o abi.ListOptions) ([]abi.KV, error) {
	b.lists.Add(1)
	return b.Backend.List(id, o)
}

func (b *testBackend) Apply(batches []*Batch) error {
	b.applies.Add(1)
	b.batches.Add(int64(len(batches)))
	b.mu.Lock()
	gate, delay := b.gate, b.delay
	fail := b.fails > 0
	if fail {
		b.fails--
	}
	b.mu.Unlock()
	select {
	case b.entered <- struct{}{}:
	default:
	}
	if gate != nil {
		<-gate
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if fail {
		return errInjected
	}
	b.mu.Lock()
	b.log = append(b.log, batches...)
	b.mu.Unlock()
	return b.Backend.Apply(batches)
}

// hold makes later Apply calls wait until release; waitEntered then waits
// for the first of them.
func (b *testBackend) hold() {
	b.drainEntered()
	b.mu.Lock()
	b.gate = make(chan struct{})
	b.mu.Unlock()
}

func (b *testBackend) release() {
	b.mu.Lock()
	if b.gate != nil {
		close(b.gate)
		b.gate = nil
	}
	b.mu.Unlock()
}

func (b *testBackend) failNext(n int) {
	b.mu.Lock()
	b.fails = n
	b.mu.Unlock()
}

// waitEntered waits until an Apply call has started.
func (b *testBackend) waitEntered(t testing.TB) {
	t.Helper()
	select {
	case <-b.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no Apply call started")
	}
}

func (b *testBackend) drainEntered() {
	for {
		select {
		case <-b.entered:
		default:
			return
		}
	}
}

// appliedKey reports whether any batch handed to the inner backend put key
// for shard id.
func (b *testBackend) appliedKey(id ShardID, key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bt := range b.log {
		if bt.Shard != id {
			continue
		}
		for _, kv := range bt.Puts {
			if kv.Key == key {
				return true
			}
		}
	}
	return false
}

// newEngine returns an engine over a wrapped backend, closed at cleanup.
func newEngine(t testing.TB, b Backend, opts EngineOptions) (*Engine, *testBackend) {
	t.Helper()
	tb := wrap(b)
	e := NewEngine(tb, opts)
	t.Cleanup(func() {
		tb.release()
		if err := e.Close(); err != nil {
			t.Errorf("Engine.Close: %v", err)
		}
	})
	return e, tb
}

func wait(t testing.TB, p *Pending) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("Pending.Wait: %v", err)
	}
}

// blocked reports whether p is still unresolved after a short while.
func blocked(p *Pending) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	return errors.Is(p.Wait(ctx), context.DeadlineExceeded)
}

func mustPut(t testing.TB, s *Shard, k, v string) {
	t.Helper()
	if err := s.Put(k, []byte(v), false); err != nil {
		t.Fatalf("Put(%q): %v", k, err)
	}
}

func mustGet(t testing.TB, s *Shard, k string) (string, bool) {
	t.Helper()
	v, ok, err := s.Get(k)
	if err != nil {
		t.Fatalf("Get(%q): %v", k, err)
	}
	return string(v), ok
}

func wantGet(t testing.TB, s *Shard, k, want string, wantOK bool) {
	t.Helper()
	v, ok := mustGet(t, s, k)
	if ok != wantOK || v != want {
		t.Fatalf("Get(%q) = %q, %v; want %q, %v", k, v, ok, want, wantOK)
	}
}

func wantBackend(t testing.TB, b Backend, id ShardID, k, want string, wantOK bool) {
	t.Helper()
	v, ok, err := b.Get(id, k)
	if err != nil {
		t.Fatalf("Backend.Get(%q): %v", k, err)
	}
	if ok != wantOK || string(v) != want {
		t.Fatalf("Backend.Get(%q) = %q, %v; want %q, %v", k, v, ok, want, wantOK)
	}
}

// refList is the reference meaning of ListOptions over a map.
func refList(m map[string][]byte, o abi.ListOptions) []abi.KV {
	var keys []string
	for k := range m {
		if !strings.HasPrefix(k, o.Prefix) ||
			o.HasStart && k < o.Start ||
			o.HasStartAfter && k <= o.StartAfter ||
			o.HasEnd && k >= o.End {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if o.Reverse {
		slices.Reverse(keys)
	}
	if o.Limit > 0 && int(o.Limit) < len(keys) {
		keys = keys[:o.Limit]
	}
	out := make([]abi.KV, 0, len(keys))
	for _, k := range keys {
		out = append(out, abi.KV{Key: k, Value: m[k]})
	}
	return out
}

func kvsEqual(a, b []abi.KV) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func fmtKVs(kvs []abi.KV) string {
	var sb strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&sb, "%q=%q ", kv.Key, kv.Value)
	}
	return sb.String()
}

// listOptionCases enumerates option combinations over the given bounds.
func listOptionCases(prefixes, bounds []string, limits []uint32) []abi.ListOptions {
	var out []abi.ListOptions
	type lower struct {
		start, after bool
		v            string
	}
	lowers := []lower{{}}
	for _, b := range bounds {
		lowers = append(lowers, lower{start: true, v: b}, lower{after: true, v: b})
	}
	uppers := []*string{nil}
	for i := range bounds {
		uppers = append(uppers, &bounds[i])
	}
	for _, p := range prefixes {
		for _, lo := range lowers {
			for _, hi := range uppers {
				for _, rev := range []bool{false, true} {
					for _, lim := range limits {
						o := abi.ListOptions{Prefix: p, Reverse: rev, Limit: lim}
						if lo.start {
							o.HasStart, o.Start = true, lo.v
						}
						if lo.after {
							o.HasStartAfter, o.StartAfter = true, lo.v
						}
						if hi != nil {
							o.HasEnd, o.End = true, *hi
						}
						out = append(out, o)
					}
				}
			}
		}
	}
	return out
}
