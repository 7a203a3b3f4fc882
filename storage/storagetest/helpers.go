package storagetest

import (
	"bytes"
	"cmp"
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

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

// id is the shard most cases use.
var id = sid("ns", "shard")

var errInjected = errors.New("injected apply failure")

// testBackend wraps a Backend to count calls, hold Apply at a gate, delay
// it, or make it fail.
type testBackend struct {
	storage.Backend

	applies atomic.Int64
	batches atomic.Int64
	gets    atomic.Int64
	entered chan struct{} // one token per Apply call

	mu    sync.Mutex
	gate  chan struct{}
	fails int
	delay time.Duration
	log   []*storage.Batch // batches handed to the inner backend
}

func wrap(b storage.Backend) *testBackend {
	return &testBackend{Backend: b, entered: make(chan struct{}, 1<<16)}
}

func (b *testBackend) Get(id storage.ShardID, key string) ([]byte, bool, error) {
	b.gets.Add(1)
	return b.Backend.Get(id, key)
}

func (b *testBackend) Apply(batches []*storage.Batch) error {
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

// setDelay makes later Apply calls sleep d first: a slow disk.
func (b *testBackend) setDelay(d time.Duration) {
	b.mu.Lock()
	b.delay = d
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
func (b *testBackend) appliedKey(id storage.ShardID, key string) bool {
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
func newEngine(t testing.TB, b storage.Backend, opts storage.EngineOptions) (*storage.Engine, *testBackend) {
	t.Helper()
	tb := wrap(b)
	e := storage.NewEngine(tb, opts)
	t.Cleanup(func() {
		tb.release()
		if err := e.Close(); err != nil {
			t.Errorf("Engine.Close: %v", err)
		}
	})
	return e, tb
}

// newShard returns shard id of an engine over a new store, closed at
// cleanup.
func newShard(t *testing.T, c *config, opts storage.EngineOptions) (*storage.Shard, *testBackend, *storage.Engine) {
	t.Helper()
	e, tb := newEngine(t, c.open(t), opts)
	return e.Shard(id), tb, e
}

// newBackend opens a new store, closed at cleanup.
func newBackend(t *testing.T, c *config) storage.Backend {
	t.Helper()
	b := c.open(t)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func wait(t testing.TB, p *storage.Pending) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("Pending.Wait: %v", err)
	}
}

// wantFailed checks that p resolves with ErrCommitFailed.
func wantFailed(t testing.TB, what string, p *storage.Pending) {
	t.Helper()
	if err := p.Wait(context.Background()); !errors.Is(err, storage.ErrCommitFailed) {
		t.Fatalf("%s: Wait = %v; want ErrCommitFailed", what, err)
	}
}

// blocked reports whether p is still unresolved after a short while.
func blocked(p *storage.Pending) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	return errors.Is(p.Wait(ctx), context.DeadlineExceeded)
}

// settle waits until every batch the shard submitted is resolved: it
// commits a confirmed write that changes nothing, the alarm set again to
// what the model says it is (0: none), whose Pending resolves only after
// every earlier batch of the shard.
func settle(t testing.TB, s *storage.Shard, alarm int64) {
	t.Helper()
	if alarm > 0 {
		must(t, s.SetAlarm(alarm))
	} else {
		must(t, s.DeleteAlarm())
	}
	wait(t, s.Commit())
}

func mustPut(t testing.TB, s *storage.Shard, k, v string) {
	t.Helper()
	if err := s.Put(k, []byte(v), false); err != nil {
		t.Fatalf("Put(%q): %v", k, err)
	}
}

func mustGet(t testing.TB, s *storage.Shard, k string) (string, bool) {
	t.Helper()
	v, ok, err := s.Get(k)
	if err != nil {
		t.Fatalf("Get(%q): %v", k, err)
	}
	return string(v), ok
}

func wantGet(t testing.TB, s *storage.Shard, k, want string, wantOK bool) {
	t.Helper()
	v, ok := mustGet(t, s, k)
	if ok != wantOK || v != want {
		t.Fatalf("Get(%q) = %q, %v; want %q, %v", k, v, ok, want, wantOK)
	}
}

func wantBackend(t testing.TB, b storage.Backend, id storage.ShardID, k, want string, wantOK bool) {
	t.Helper()
	v, ok, err := b.Get(id, k)
	if err != nil {
		t.Fatalf("Backend.Get(%q): %v", k, err)
	}
	if ok != wantOK || string(v) != want {
		t.Fatalf("Backend.Get(%q) = %q, %v; want %q, %v", k, v, ok, want, wantOK)
	}
}

// lister is a List method: Shard.List, or Backend.List bound to a shard
// (backendList).
type lister func(abi.ListOptions) ([]abi.KV, error)

func backendList(b storage.Backend, id storage.ShardID) lister {
	return func(o abi.ListOptions) ([]abi.KV, error) { return b.List(id, o) }
}

// wantList checks that list(o) returns exactly want.
func wantList(t testing.TB, what string, list lister, o abi.ListOptions, want []abi.KV) {
	t.Helper()
	got, err := list(o)
	if err != nil {
		t.Fatalf("%s: List(%+v): %v", what, o, err)
	}
	if !kvsEqual(got, want) {
		t.Fatalf("%s: List(%+v)\n got %s\nwant %s", what, o, fmtKVs(got), fmtKVs(want))
	}
}

// wantAll checks that list returns exactly want with no options.
func wantAll(t testing.TB, what string, list lister, want ...abi.KV) {
	t.Helper()
	wantList(t, what, list, abi.ListOptions{}, want)
}

// wantAlarm returns a check of a GetAlarm result: want 0 is no alarm.
//
//	wantAlarm(t, "after DeleteAll", 42)(b.GetAlarm(id))
func wantAlarm(t testing.TB, what string, want int64) func(int64, bool, error) {
	return func(at int64, ok bool, err error) {
		t.Helper()
		if err != nil || ok != (want > 0) || ok && at != want {
			t.Fatalf("%s: GetAlarm = %d, %v, %v; want %d (0: none)", what, at, ok, err, want)
		}
	}
}

// wantAlarms checks a list of alarms, whatever its order.
func wantAlarms(t testing.TB, what string, alarms []storage.Alarm, err error, want ...storage.Alarm) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: Alarms: %v", what, err)
	}
	alarms = slices.Clone(alarms)
	slices.SortFunc(alarms, compareAlarms)
	want = slices.Clone(want)
	slices.SortFunc(want, compareAlarms)
	if !slices.Equal(alarms, want) {
		t.Fatalf("%s: Alarms = %v; want %v", what, alarms, want)
	}
}

func compareAlarms(a, b storage.Alarm) int {
	return cmp.Or(strings.Compare(a.Shard.Namespace, b.Shard.Namespace), strings.Compare(a.Shard.Name, b.Shard.Name))
}

// kvs builds entries from key, value pairs.
func kvs(kv ...string) []abi.KV {
	out := make([]abi.KV, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, abi.KV{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return out
}

// numbered returns n entries prefix+i = val, i in decimal with at least two
// digits and as many as n-1 has, so that key order is number order.
func numbered(prefix string, n int, val string) []abi.KV {
	width := max(2, len(fmt.Sprint(n-1)))
	out := make([]abi.KV, n)
	for i := range out {
		out[i] = abi.KV{Key: fmt.Sprintf("%s%0*d", prefix, width, i), Value: []byte(val)}
	}
	return out
}

// apply applies one group of batches and fails t on error.
func apply(t testing.TB, b storage.Backend, batches ...*storage.Batch) {
	t.Helper()
	if err := b.Apply(batches); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// wantErr checks that err wraps want.
func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s = %v; want %v", what, err, want)
	}
}

// parallel runs f(0) to f(n-1) in goroutines of their own, waits for them
// all and fails t with the errors they returned.
func parallel(t testing.TB, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if err := f(i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := false
	for err := range errs {
		t.Error(err)
		failed = true
	}
	if failed {
		t.FailNow()
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
	return slices.EqualFunc(a, b, func(x, y abi.KV) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
}

func fmtKVs(kvs []abi.KV) string {
	var sb strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&sb, "%q=%q ", kv.Key, kv.Value)
	}
	return sb.String()
}

// listKeys is a key set full of edge cases for ranges and prefixes.
var listKeys = []string{"", "\x00", "a", "a\x00", "a\xff", "a\xff\xff", "ab", "aba", "abb", "ac", "b", "b\x00", "ba", "\xff", "\xff\xff", "\xff\xff\x00"}

var (
	listPrefixes = []string{"", "a", "ab", "a\xff", "\xff", "\xff\xff", "c"}
	listBounds   = []string{"", "\x00", "a", "ab", "ab\x00", "abb", "b", "\xff", "\xff\xff\xff"}
)

// checkListOptions checks list against refList(model) for every valid
// combination of options over listPrefixes and listBounds with the limits.
func checkListOptions(t testing.TB, stage string, list lister, model map[string][]byte, limits []uint32) {
	t.Helper()
	for _, o := range listOptionCases(listPrefixes, listBounds, limits) {
		if o.HasStart && o.HasStartAfter {
			continue
		}
		wantList(t, stage, list, o, refList(model, o))
	}
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

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func second[T any](_ T, err error) error { return err }

func third[A, B any](_ A, _ B, err error) error { return err }

// sid returns the shard ns/name.
func sid(ns, name string) storage.ShardID { return storage.ShardID{Namespace: ns, Name: name} }
