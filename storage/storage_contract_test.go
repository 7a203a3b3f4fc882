package storage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
)

// TestContract runs the same suite over every Backend, directly and under
// an Engine.
func TestContract(t *testing.T) {
	for _, k := range backendKinds() {
		t.Run(k.name, func(t *testing.T) { runContract(t, k) })
	}
}

func runContract(t *testing.T, kind backendKind) {
	newBackend := func(t *testing.T) Backend {
		b := kind.open(t, t.TempDir())
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	newShard := func(t *testing.T, opts EngineOptions) (*Shard, *testBackend, *Engine) {
		e, tb := newEngine(t, kind.open(t, t.TempDir()), opts)
		return e.Shard(ShardID{"ns", "shard"}), tb, e
	}
	id := ShardID{"ns", "shard"}

	t.Run("BackendApplyGetList", func(t *testing.T) {
		b := newBackend(t)
		other := ShardID{"ns", "shard2"}
		err := b.Apply([]*Batch{
			{Shard: id, Puts: []abi.KV{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "", Value: []byte("empty")}}},
			{Shard: other, Puts: []abi.KV{{Key: "a", Value: []byte("other")}}},
			{Shard: id, Puts: []abi.KV{{Key: "c", Value: []byte{}}}, Deletes: []string{"b", "missing"}},
		})
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		wantBackend(t, b, id, "a", "1", true)
		wantBackend(t, b, id, "b", "", false)
		wantBackend(t, b, id, "", "empty", true)
		wantBackend(t, b, id, "c", "", true)
		wantBackend(t, b, other, "a", "other", true)
		got, err := b.List(id, abi.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := []abi.KV{{Key: "", Value: []byte("empty")}, {Key: "a", Value: []byte("1")}, {Key: "c", Value: []byte{}}}
		if !kvsEqual(got, want) {
			t.Fatalf("List = %s; want %s", fmtKVs(got), fmtKVs(want))
		}
		// The caller owns returned values.
		v, _, _ := b.Get(id, "a")
		v[0] = 'X'
		wantBackend(t, b, id, "a", "1", true)
	})

	t.Run("BackendNamesWithAnyBytes", func(t *testing.T) {
		b := newBackend(t)
		// Without length prefixes these would collide.
		ids := []ShardID{{"a", "bc"}, {"ab", "c"}, {"a\x00", "b"}, {"", "a"}, {"a", ""}, {"\xff", "\xff\x00"}}
		var batches []*Batch
		for i, x := range ids {
			batches = append(batches, &Batch{Shard: x, Puts: []abi.KV{{Key: "k", Value: []byte(fmt.Sprint(i))}}, SetAlarm: int64(i + 1)})
		}
		if err := b.Apply(batches); err != nil {
			t.Fatal(err)
		}
		for i, x := range ids {
			wantBackend(t, b, x, "k", fmt.Sprint(i), true)
			kvs, err := b.List(x, abi.ListOptions{})
			if err != nil || len(kvs) != 1 {
				t.Fatalf("List(%v) = %v, %v; want one entry", x, kvs, err)
			}
		}
		alarms, err := b.Alarms()
		if err != nil {
			t.Fatal(err)
		}
		if len(alarms) != len(ids) {
			t.Fatalf("Alarms = %v; want %d", alarms, len(ids))
		}
		for _, a := range alarms {
			i := slices.Index(ids, a.Shard)
			if i < 0 || a.At != int64(i+1) {
				t.Fatalf("alarm %+v does not match", a)
			}
		}
	})

	t.Run("BackendDeleteAll", func(t *testing.T) {
		b := newBackend(t)
		other := ShardID{"ns", "other"}
		var puts []abi.KV
		for i := range 50 {
			puts = append(puts, abi.KV{Key: fmt.Sprintf("k%02d", i), Value: []byte("v")})
		}
		must(t, b.Apply([]*Batch{{Shard: id, Puts: puts, SetAlarm: 42}, {Shard: other, Puts: puts[:3]}}))
		must(t, b.Apply([]*Batch{{Shard: id, DeleteAll: true, Puts: []abi.KV{{Key: "k07", Value: []byte("new")}}}}))
		got, err := b.List(id, abi.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if want := []abi.KV{{Key: "k07", Value: []byte("new")}}; !kvsEqual(got, want) {
			t.Fatalf("List after DeleteAll = %s; want %s", fmtKVs(got), fmtKVs(want))
		}
		wantBackend(t, b, id, "k01", "", false)
		if at, ok, err := b.GetAlarm(id); err != nil || !ok || at != 42 {
			t.Fatalf("alarm after DeleteAll = %d, %v, %v; want 42 (DeleteAll keeps the alarm)", at, ok, err)
		}
		if got, _ := b.List(other, abi.ListOptions{}); len(got) != 3 {
			t.Fatalf("other shard lost data: %s", fmtKVs(got))
		}
		// DeleteAll then puts, twice in one group.
		must(t, b.Apply([]*Batch{
			{Shard: id, DeleteAll: true, Puts: []abi.KV{{Key: "x", Value: []byte("1")}}},
			{Shard: id, Puts: []abi.KV{{Key: "y", Value: []byte("2")}}},
			{Shard: id, DeleteAll: true, Puts: []abi.KV{{Key: "z", Value: []byte("3")}}},
		}))
		got, _ = b.List(id, abi.ListOptions{})
		if want := []abi.KV{{Key: "z", Value: []byte("3")}}; !kvsEqual(got, want) {
			t.Fatalf("List = %s; want %s", fmtKVs(got), fmtKVs(want))
		}
	})

	t.Run("BackendAlarms", func(t *testing.T) {
		b := newBackend(t)
		a, c := ShardID{"n", "a"}, ShardID{"n", "c"}
		must(t, b.Apply([]*Batch{{Shard: a, SetAlarm: 100}, {Shard: c, SetAlarm: 300}}))
		if at, ok, _ := b.GetAlarm(a); !ok || at != 100 {
			t.Fatalf("GetAlarm = %d, %v", at, ok)
		}
		must(t, b.Apply([]*Batch{{Shard: a, DelAlarm: true}, {Shard: c, SetAlarm: 301}}))
		if _, ok, _ := b.GetAlarm(a); ok {
			t.Fatal("alarm survived DelAlarm")
		}
		alarms, err := b.Alarms()
		if err != nil {
			t.Fatal(err)
		}
		if want := []Alarm{{Shard: c, At: 301}}; !slices.Equal(alarms, want) {
			t.Fatalf("Alarms = %v; want %v", alarms, want)
		}
	})

	t.Run("BackendLimitsAndClose", func(t *testing.T) {
		b := newBackend(t)
		err := b.Apply([]*Batch{
			{Shard: id, Puts: []abi.KV{{Key: "ok", Value: []byte("1")}}},
			{Shard: id, Puts: []abi.KV{{Key: strings.Repeat("k", abi.MaxKeySize+1)}}},
		})
		if !errors.Is(err, ErrKeyTooLarge) {
			t.Fatalf("Apply with a long key = %v; want ErrKeyTooLarge", err)
		}
		wantBackend(t, b, id, "ok", "", false) // nothing of the group applied
		if err := b.Apply([]*Batch{{Shard: id, Puts: []abi.KV{{Key: "k", Value: make([]byte, abi.MaxValueSize+1)}}}}); !errors.Is(err, ErrValueTooLarge) {
			t.Fatalf("Apply with a large value = %v; want ErrValueTooLarge", err)
		}
		if _, err := b.List(id, abi.ListOptions{HasStart: true, HasStartAfter: true}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("List with start and startAfter = %v; want ErrInvalid", err)
		}
		must(t, b.Close())
		must(t, b.Close())
		if _, _, err := b.Get(id, "k"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Get after Close = %v; want ErrClosed", err)
		}
		if err := b.Apply([]*Batch{{Shard: id}}); !errors.Is(err, ErrClosed) {
			t.Fatalf("Apply after Close = %v; want ErrClosed", err)
		}
	})

	t.Run("BackendListOptions", func(t *testing.T) {
		b := newBackend(t)
		model := map[string][]byte{}
		var puts []abi.KV
		for _, k := range listKeys {
			model[k] = []byte("v" + k)
			puts = append(puts, abi.KV{Key: k, Value: model[k]})
		}
		must(t, b.Apply([]*Batch{{Shard: id, Puts: puts}, {Shard: ShardID{"ns", "shard\x00"}, Puts: puts}}))
		for _, o := range listOptionCases(listPrefixes, listBounds, []uint32{0, 1, 3}) {
			got, err := b.List(id, o)
			if o.HasStart && o.HasStartAfter {
				continue
			}
			if err != nil {
				t.Fatalf("List(%+v): %v", o, err)
			}
			if want := refList(model, o); !kvsEqual(got, want) {
				t.Fatalf("List(%+v)\n got %s\nwant %s", o, fmtKVs(got), fmtKVs(want))
			}
		}
	})

	t.Run("GetPutDelete", func(t *testing.T) {
		s, _, _ := newShard(t, EngineOptions{})
		wantGet(t, s, "a", "", false)
		mustPut(t, s, "a", "1")
		mustPut(t, s, "", "empty key")
		mustPut(t, s, "bin\x00\xff", "x")
		wantGet(t, s, "a", "1", true) // the event's own write
		wait(t, s.Commit())
		wantGet(t, s, "a", "1", true)
		wantGet(t, s, "", "empty key", true)
		wantGet(t, s, "bin\x00\xff", "x", true)
		if ok, err := s.Delete("a"); err != nil || !ok {
			t.Fatalf("Delete(a) = %v, %v; want true", ok, err)
		}
		if ok, err := s.Delete("a"); err != nil || ok {
			t.Fatalf("second Delete(a) = %v, %v; want false", ok, err)
		}
		if ok, err := s.Delete("never"); err != nil || ok {
			t.Fatalf("Delete(never) = %v, %v; want false", ok, err)
		}
		wait(t, s.Commit())
		wantGet(t, s, "a", "", false)
		// Put, delete, put again in one event.
		mustPut(t, s, "p", "1")
		if ok, _ := s.Delete("p"); !ok {
			t.Fatal("Delete of the event's own put = false")
		}
		wantGet(t, s, "p", "", false)
		mustPut(t, s, "p", "2")
		wait(t, s.Commit())
		wantGet(t, s, "p", "2", true)
		// Put with a nil value stores an empty value.
		if err := s.Put("nil", nil, false); err != nil {
			t.Fatal(err)
		}
		wait(t, s.Commit())
		wantGet(t, s, "nil", "", true)
	})

	t.Run("Multi", func(t *testing.T) {
		s, tb, _ := newShard(t, EngineOptions{})
		must(t, s.PutMulti([]abi.KV{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "a", Value: []byte("3")}}, false))
		got, err := s.GetMulti([]string{"b", "x", "a", "b"})
		if err != nil {
			t.Fatal(err)
		}
		want := []abi.KV{{Key: "b", Value: []byte("2")}, {Key: "a", Value: []byte("3")}}
		if !kvsEqual(got, want) {
			t.Fatalf("GetMulti = %s; want %s", fmtKVs(got), fmtKVs(want))
		}
		wait(t, s.Commit())
		wantBackend(t, tb.Backend, id, "a", "3", true)
		n, err := s.DeleteMulti([]string{"a", "x", "a", "b"})
		if err != nil || n != 2 {
			t.Fatalf("DeleteMulti = %d, %v; want 2", n, err)
		}
		wait(t, s.Commit())
		if got, _ := s.GetMulti([]string{"a", "b"}); len(got) != 0 {
			t.Fatalf("GetMulti after DeleteMulti = %s", fmtKVs(got))
		}
		wantBackend(t, tb.Backend, id, "b", "", false)
	})

	t.Run("Limits", func(t *testing.T) {
		s, _, _ := newShard(t, EngineOptions{})
		long := strings.Repeat("k", abi.MaxKeySize+1)
		okKey := strings.Repeat("k", abi.MaxKeySize)
		big := make([]byte, abi.MaxValueSize+1)
		okVal := make([]byte, abi.MaxValueSize)
		many := make([]string, abi.MaxMultiKeys+1)
		manyKVs := make([]abi.KV, abi.MaxMultiKeys+1)
		checks := []struct {
			name string
			err  error
			want error
		}{
			{"Put long key", s.Put(long, nil, false), ErrKeyTooLarge},
			{"Put big value", s.Put("k", big, false), ErrValueTooLarge},
			{"PutMulti big value", s.PutMulti([]abi.KV{{Key: "a", Value: []byte("1")}, {Key: "b", Value: big}}, false), ErrValueTooLarge},
			{"PutMulti long key", s.PutMulti([]abi.KV{{Key: "a", Value: []byte("1")}, {Key: long}}, false), ErrKeyTooLarge},
			{"PutMulti too many", s.PutMulti(manyKVs, false), ErrTooManyKeys},
			{"Get long key", third(s.Get(long)), ErrKeyTooLarge},
			{"GetMulti too many", second(s.GetMulti(many)), ErrTooManyKeys},
			{"Delete long key", second(s.Delete(long)), ErrKeyTooLarge},
			{"DeleteMulti too many", second(s.DeleteMulti(many)), ErrTooManyKeys},
			{"DeleteMulti long key", second(s.DeleteMulti([]string{"a", long})), ErrKeyTooLarge},
			{"List start and startAfter", second(s.List(abi.ListOptions{HasStart: true, HasStartAfter: true})), ErrInvalid},
			{"SetAlarm 0", s.SetAlarm(0), ErrInvalid},
		}
		for _, c := range checks {
			if !errors.Is(c.err, c.want) {
				t.Errorf("%s: err = %v; want %v", c.name, c.err, c.want)
			}
		}
		if p := s.Commit(); p != nil {
			t.Fatal("violations left writes in the event")
		}
		if got, _ := s.List(abi.ListOptions{}); len(got) != 0 {
			t.Fatalf("violations changed data: %s", fmtKVs(got))
		}
		// Exactly at the limits is fine.
		must(t, s.Put(okKey, okVal, false))
		must(t, s.PutMulti(manyKVs[:abi.MaxMultiKeys], false))
		wait(t, s.Commit())
		if v, ok, _ := s.Get(okKey); !ok || len(v) != abi.MaxValueSize {
			t.Fatalf("max-size entry not stored")
		}
	})

	t.Run("PipelinedReadYourWrites", func(t *testing.T) {
		s, tb, _ := newShard(t, EngineOptions{})
		mustPut(t, s, "a", "0")
		mustPut(t, s, "gone", "x")
		wait(t, s.Commit())

		tb.hold()
		mustPut(t, s, "a", "1")
		p1 := s.Commit()
		tb.waitEntered(t)
		// Event 2 runs while event 1 is not durable.
		wantGet(t, s, "a", "1", true)
		if ok, _ := s.Delete("gone"); !ok {
			t.Fatal("Delete(gone) = false")
		}
		mustPut(t, s, "b", "2")
		p2 := s.Commit()
		// Event 3 sees both, and the backend has neither.
		wantGet(t, s, "a", "1", true)
		wantGet(t, s, "b", "2", true)
		wantGet(t, s, "gone", "", false)
		got, _ := s.List(abi.ListOptions{})
		want := []abi.KV{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}
		if !kvsEqual(got, want) {
			t.Fatalf("List = %s; want %s", fmtKVs(got), fmtKVs(want))
		}
		wantBackend(t, tb.Backend, id, "a", "0", true)
		wantBackend(t, tb.Backend, id, "b", "", false)
		if !blocked(p1) || !blocked(p2) {
			t.Fatal("a Pending resolved before its writes were durable")
		}
		tb.release()
		wait(t, p1)
		wait(t, p2)
		wantBackend(t, tb.Backend, id, "a", "1", true)
		wantBackend(t, tb.Backend, id, "b", "2", true)
		wantBackend(t, tb.Backend, id, "gone", "", false)
		wantGet(t, s, "b", "2", true)
	})

	t.Run("OutputGate", func(t *testing.T) {
		s, tb, _ := newShard(t, EngineOptions{})
		tb.hold()
		// Only unconfirmed writes, nothing earlier in flight: not held.
		must(t, s.Put("u", []byte("1"), true))
		if p := s.Commit(); !p.Done() {
			t.Fatal("an event with only unconfirmed writes is held")
		}
		tb.waitEntered(t)
		// A confirmed write is held.
		mustPut(t, s, "c", "1")
		pc := s.Commit()
		if !blocked(pc) {
			t.Fatal("a confirmed write was not held")
		}
		// Later events that may have read it are held too, with or without
		// writes of their own.
		wantGet(t, s, "c", "1", true)
		pr := s.Commit()
		must(t, s.Put("u2", []byte("1"), true))
		pu := s.Commit()
		if pr == nil || pu == nil || !blocked(pr) || !blocked(pu) {
			t.Fatal("an event after an unconfirmed write in flight was not held")
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := pc.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait with a cancelled context = %v", err)
		}
		tb.release()
		wait(t, pc)
		wait(t, pr)
		wait(t, pu)
		// Nothing in flight: an event without writes is not held.
		wantGet(t, s, "u2", "1", true)
		if p := s.Commit(); p != nil {
			t.Fatal("an event without writes got a Pending with nothing in flight")
		}
		var nilPending *Pending
		must(t, nilPending.Wait(context.Background()))
	})

	t.Run("Abort", func(t *testing.T) {
		s, tb, _ := newShard(t, EngineOptions{})
		mustPut(t, s, "keep", "1")
		must(t, s.SetAlarm(500))
		wait(t, s.Commit())

		mustPut(t, s, "x", "1")
		mustPut(t, s, "keep", "changed")
		must(t, s.DeleteAll())
		must(t, s.SetAlarm(900))
		s.Abort()
		wantGet(t, s, "x", "", false)
		wantGet(t, s, "keep", "1", true)
		if at, ok, _ := s.GetAlarm(); !ok || at != 500 {
			t.Fatalf("alarm after Abort = %d, %v; want 500", at, ok)
		}
		if p := s.Commit(); p != nil {
			t.Fatal("Commit after Abort has writes")
		}
		if n := tb.batches.Load(); n != 1 {
			t.Fatalf("%d batches applied; want 1", n)
		}
	})

	t.Run("DeleteAll", func(t *testing.T) {
		s, tb, _ := newShard(t, EngineOptions{})
		for i := range 20 {
			mustPut(t, s, fmt.Sprintf("k%02d", i), "v")
		}
		must(t, s.SetAlarm(1234))
		wait(t, s.Commit())
		wantGet(t, s, "k03", "v", true) // cached

		tb.hold()
		must(t, s.DeleteAll())
		wantGet(t, s, "k03", "", false)
		mustPut(t, s, "k05", "after")
		p := s.Commit()
		tb.waitEntered(t)
		// In flight: the backend still has everything, reads must not.
		wantBackend(t, tb.Backend, id, "k03", "v", true)
		wantGet(t, s, "k03", "", false)
		wantGet(t, s, "k05", "after", true)
		got, _ := s.List(abi.ListOptions{})
		if want := []abi.KV{{Key: "k05", Value: []byte("after")}}; !kvsEqual(got, want) {
			t.Fatalf("List = %s; want %s", fmtKVs(got), fmtKVs(want))
		}
		mustPut(t, s, "k06", "later")
		p2 := s.Commit()
		tb.release()
		wait(t, p)
		wait(t, p2)
		wantGet(t, s, "k03", "", false)
		wantBackend(t, tb.Backend, id, "k03", "", false)
		got, _ = tb.Backend.List(id, abi.ListOptions{})
		if want := []abi.KV{{Key: "k05", Value: []byte("after")}, {Key: "k06", Value: []byte("later")}}; !kvsEqual(got, want) {
			t.Fatalf("backend List = %s; want %s", fmtKVs(got), fmtKVs(want))
		}
		if at, ok, _ := s.GetAlarm(); !ok || at != 1234 {
			t.Fatalf("DeleteAll removed the alarm: %d, %v", at, ok)
		}
	})

	t.Run("Alarms", func(t *testing.T) {
		s, tb, e := newShard(t, EngineOptions{})
		if _, ok, err := s.GetAlarm(); ok || err != nil {
			t.Fatalf("GetAlarm on a new shard = %v, %v", ok, err)
		}
		must(t, s.SetAlarm(1000))
		if at, ok, _ := s.GetAlarm(); !ok || at != 1000 {
			t.Fatalf("GetAlarm sees %d, %v; want the event's own 1000", at, ok)
		}
		wait(t, s.Commit())
		other := e.Shard(ShardID{"ns", "other"})
		must(t, other.SetAlarm(2000))
		wait(t, other.Commit())
		alarms, err := e.Alarms()
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(alarms, func(a, b Alarm) int { return compareID(a.Shard, b.Shard) })
		if want := []Alarm{{other.ID(), 2000}, {id, 1000}}; !slices.Equal(alarms, want) {
			t.Fatalf("Alarms = %v; want %v", alarms, want)
		}
		tb.hold()
		must(t, s.DeleteAlarm())
		if _, ok, _ := s.GetAlarm(); ok {
			t.Fatal("GetAlarm sees an alarm after the event deleted it")
		}
		p := s.Commit()
		if _, ok, _ := s.GetAlarm(); ok {
			t.Fatal("GetAlarm sees an alarm whose deletion is in flight")
		}
		tb.release()
		wait(t, p)
		if _, ok, _ := tb.Backend.GetAlarm(id); ok {
			t.Fatal("alarm deletion not durable")
		}
		must(t, s.SetAlarm(3000))
		must(t, s.DeleteAlarm())
		must(t, s.SetAlarm(4000))
		wait(t, s.Commit())
		if at, ok, _ := tb.Backend.GetAlarm(id); !ok || at != 4000 {
			t.Fatalf("backend alarm = %d, %v; want 4000", at, ok)
		}
	})

	t.Run("CommitFailure", func(t *testing.T) {
		s, tb, e := newShard(t, EngineOptions{})
		bystander := e.Shard(ShardID{"ns", "bystander"})
		mustPut(t, s, "a", "durable")
		wait(t, s.Commit())

		tb.hold()
		tb.failNext(1)
		mustPut(t, s, "a", "lost")
		mustPut(t, s, "b", "lost")
		p1 := s.Commit()
		tb.waitEntered(t)
		// Built on the failing event: must fail too, without being applied.
		wantGet(t, s, "a", "lost", true)
		mustPut(t, s, "c", "built on lost")
		p2 := s.Commit()
		mustPut(t, bystander, "x", "fine")
		pb := bystander.Commit()
		applies := tb.applies.Load()
		tb.release()

		for i, p := range []*Pending{p1, p2} {
			if err := p.Wait(context.Background()); !errors.Is(err, ErrCommitFailed) || !errors.Is(err, errInjected) {
				t.Fatalf("pending %d: Wait = %v; want ErrCommitFailed wrapping the cause", i+1, err)
			}
		}
		wait(t, pb)
		if !errors.Is(s.Err(), ErrCommitFailed) {
			t.Fatalf("Err = %v; want ErrCommitFailed", s.Err())
		}
		if bystander.Err() != nil {
			t.Fatalf("bystander Err = %v", bystander.Err())
		}
		if tb.appliedKey(id, "c") {
			t.Fatal("a batch built on a failed one was applied")
		}
		if got := tb.applies.Load() - applies; got != 1 {
			t.Fatalf("%d Apply calls after the failure; want 1 (the bystander's)", got)
		}
		// A failed shard refuses work until Reset.
		if _, _, err := s.Get("a"); !errors.Is(err, ErrCommitFailed) {
			t.Fatalf("Get on a failed shard = %v", err)
		}
		if err := s.Commit().Wait(context.Background()); !errors.Is(err, ErrCommitFailed) {
			t.Fatalf("Commit on a failed shard = %v", err)
		}

		s.Reset()
		if s.Err() != nil {
			t.Fatalf("Err after Reset = %v", s.Err())
		}
		wantGet(t, s, "a", "durable", true)
		wantGet(t, s, "b", "", false)
		wantGet(t, s, "c", "", false)
		mustPut(t, s, "d", "after reset")
		wait(t, s.Commit())
		wantBackend(t, tb.Backend, id, "d", "after reset", true)
		if st := e.Stats(); st.Failed != 2 {
			t.Fatalf("Stats.Failed = %d; want 2", st.Failed)
		}
	})

	t.Run("BatchAtomicity", func(t *testing.T) {
		s, tb, _ := newShard(t, EngineOptions{})
		tb.failNext(1)
		for i := range 10 {
			mustPut(t, s, fmt.Sprint(i), "v")
		}
		must(t, s.SetAlarm(77))
		if err := s.Commit().Wait(context.Background()); !errors.Is(err, ErrCommitFailed) {
			t.Fatalf("Wait = %v", err)
		}
		s.Reset()
		if got, _ := s.List(abi.ListOptions{}); len(got) != 0 {
			t.Fatalf("part of a failed batch is visible: %s", fmtKVs(got))
		}
		if _, ok, _ := s.GetAlarm(); ok {
			t.Fatal("the alarm of a failed batch is visible")
		}
		for i := range 10 {
			mustPut(t, s, fmt.Sprint(i), "v")
		}
		wait(t, s.Commit())
		if got, _ := tb.Backend.List(id, abi.ListOptions{}); len(got) != 10 {
			t.Fatalf("backend has %d entries; want 10", len(got))
		}
	})

	t.Run("GroupCommit", func(t *testing.T) {
		// Pipelined: a whole burst of events becomes one Apply.
		s, tb, _ := newShard(t, EngineOptions{})
		tb.hold()
		var last *Pending
		for i := range 1000 {
			mustPut(t, s, "counter", fmt.Sprint(i))
			last = s.Commit()
		}
		tb.release()
		wait(t, last)
		if n := tb.applies.Load(); n > 2 {
			t.Fatalf("%d Apply calls for 1000 pipelined events; want at most 2", n)
		}
		wantBackend(t, tb.Backend, id, "counter", "999", true)
	})

	t.Run("GroupCommitConcurrentShards", func(t *testing.T) {
		e, tb := newEngine(t, kind.open(t, t.TempDir()), EngineOptions{})
		tb.mu.Lock()
		tb.delay = time.Millisecond // a disk that takes a while
		tb.mu.Unlock()
		const shards, events = 8, 50
		var wg sync.WaitGroup
		errs := make(chan error, shards)
		for i := range shards {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := e.Shard(ShardID{"ns", fmt.Sprint(i)})
				defer s.Close()
				for j := range events {
					if err := s.Put("k", []byte(fmt.Sprint(j)), false); err != nil {
						errs <- err
						return
					}
					if err := s.Commit().Wait(context.Background()); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		commits := int64(shards * events)
		if n := tb.applies.Load(); n >= commits/2 {
			t.Fatalf("%d Apply calls for %d commits waiting on their writes: not grouped", n, commits)
		}
		if n := tb.batches.Load(); n != commits {
			t.Fatalf("%d batches applied; want %d", n, commits)
		}
		for i := range shards {
			wantBackend(t, tb.Backend, ShardID{"ns", fmt.Sprint(i)}, "k", fmt.Sprint(events-1), true)
		}
	})

	t.Run("MaxGroupAndOrder", func(t *testing.T) {
		s, tb, _ := newShard(t, EngineOptions{MaxGroup: 3})
		tb.hold()
		var ps []*Pending
		for i := range 10 {
			mustPut(t, s, "k", fmt.Sprint(i))
			mustPut(t, s, fmt.Sprint("only", i), "x")
			if i == 5 {
				must(t, s.DeleteAll())
				mustPut(t, s, "k", "5")
			}
			ps = append(ps, s.Commit())
		}
		tb.release()
		for _, p := range ps {
			wait(t, p)
		}
		if n, b := tb.applies.Load(), tb.batches.Load(); n < 4 || b != 10 {
			t.Fatalf("%d Apply calls for %d batches with MaxGroup 3", n, b)
		}
		wantBackend(t, tb.Backend, id, "k", "9", true)
		got, _ := tb.Backend.List(id, abi.ListOptions{Prefix: "only"})
		if len(got) != 4 { // only6..only9: the DeleteAll of event 5 dropped only5
			t.Fatalf("backend List = %s; want only6..only9", fmtKVs(got))
		}
	})

	t.Run("ReadCache", func(t *testing.T) {
		s, tb, _ := newShard(t, EngineOptions{})
		mustPut(t, s, "hot", "1")
		wait(t, s.Commit())
		wantGet(t, s, "absent", "", false)
		gets := tb.gets.Load()
		for range 100 {
			wantGet(t, s, "hot", "1", true)
			wantGet(t, s, "absent", "", false)
		}
		if n := tb.gets.Load() - gets; n != 0 {
			t.Fatalf("%d backend reads for cached keys", n)
		}
	})

	t.Run("HandleReuse", func(t *testing.T) {
		e, tb := newEngine(t, kind.open(t, t.TempDir()), EngineOptions{})
		s := e.Shard(id)
		if e.Shard(id) != s {
			t.Fatal("a second Shard call for an open shard returned another handle")
		}
		s.Close()
		tb.hold()
		mustPut(t, s, "k", "v")
		p := s.Commit()
		tb.waitEntered(t)
		done := make(chan struct{})
		go func() { s.Close(); close(done) }()
		select {
		case <-done:
			t.Fatal("Close returned with writes in flight")
		case <-time.After(20 * time.Millisecond):
		}
		tb.release()
		<-done
		wait(t, p)
		s2 := e.Shard(id)
		if s2 == s {
			t.Fatal("Shard after the last Close returned the old handle")
		}
		wantGet(t, s2, "k", "v", true)
		s2.Close()
	})

	t.Run("CloseDrains", func(t *testing.T) {
		dir := t.TempDir()
		tb := wrap(kind.open(t, dir))
		e := NewEngine(tb, EngineOptions{})
		s := e.Shard(id)
		tb.hold()
		mustPut(t, s, "first", "1")
		p1 := s.Commit()
		tb.waitEntered(t)
		mustPut(t, s, "second", "2")
		must(t, s.SetAlarm(99))
		p2 := s.Commit()
		closed := make(chan error)
		go func() { closed <- e.Close() }()
		time.Sleep(10 * time.Millisecond)
		tb.release()
		must(t, <-closed)
		wait(t, p1)
		wait(t, p2)
		must(t, e.Close()) // idempotent
		if _, _, err := s.Get("first"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Get after Close = %v; want ErrClosed", err)
		}
		mustErr := s.Put("x", nil, false)
		if !errors.Is(mustErr, ErrClosed) {
			t.Fatalf("Put after Close = %v", mustErr)
		}
		if err := s.Commit().Wait(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Commit after Close = %v; want ErrClosed", err)
		}
		if _, err := e.Alarms(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Alarms after Close = %v", err)
		}
		if !kind.persistent {
			return
		}
		e2 := NewEngine(kind.open(t, dir), EngineOptions{})
		defer func() { must(t, e2.Close()) }()
		s2 := e2.Shard(id)
		wantGet(t, s2, "first", "1", true)
		wantGet(t, s2, "second", "2", true)
		if at, ok, _ := s2.GetAlarm(); !ok || at != 99 {
			t.Fatalf("alarm after reopen = %d, %v", at, ok)
		}
		alarms, _ := e2.Alarms()
		if want := []Alarm{{id, 99}}; !slices.Equal(alarms, want) {
			t.Fatalf("Alarms after reopen = %v; want %v", alarms, want)
		}
	})

	t.Run("ListLayers", func(t *testing.T) {
		// Data spread over the backend, the overlay (held in flight) and the
		// current event, with deletions and overwrites across layers.
		s, tb, _ := newShard(t, EngineOptions{})
		model := map[string][]byte{}
		put := func(k, v string) {
			mustPut(t, s, k, v)
			model[k] = []byte(v)
		}
		del := func(k string) {
			if _, err := s.Delete(k); err != nil {
				t.Fatal(err)
			}
			delete(model, k)
		}
		for i, k := range listKeys {
			put(k, fmt.Sprint("durable", i))
		}
		wait(t, s.Commit())
		tb.hold()
		for i, k := range listKeys {
			switch i % 4 {
			case 0:
				del(k)
			case 1:
				put(k, fmt.Sprint("overlay", i))
			}
		}
		put("ab\x00new", "overlay new")
		s.Commit()
		tb.waitEntered(t)
		for i, k := range listKeys {
			switch i % 5 {
			case 0:
				put(k, fmt.Sprint("event", i))
			case 2:
				del(k)
			}
		}
		put("b\xffnew", "event new")
		checkList := func(stage string) {
			t.Helper()
			for _, o := range listOptionCases(listPrefixes, listBounds, []uint32{0, 1, 2, 5}) {
				if o.HasStart && o.HasStartAfter {
					continue
				}
				got, err := s.List(o)
				if err != nil {
					t.Fatalf("%s: List(%+v): %v", stage, o, err)
				}
				if want := refList(model, o); !kvsEqual(got, want) {
					t.Fatalf("%s: List(%+v)\n got %s\nwant %s", stage, o, fmtKVs(got), fmtKVs(want))
				}
			}
		}
		checkList("three layers")
		p := s.Commit()
		checkList("two layers")
		tb.release()
		wait(t, p)
		mustPut(t, s, "zz", "z")
		s.Abort()
		wait(t, s.Commit())
		checkList("durable")
		// And with a DeleteAll in the event.
		must(t, s.DeleteAll())
		clear(model)
		put("ab", "only")
		checkList("after DeleteAll")
	})

	t.Run("RandomModel", func(t *testing.T) {
		for seed := range uint64(4) {
			t.Run(fmt.Sprint(seed), func(t *testing.T) { randomModel(t, kind, seed) })
		}
	})
}

// listKeys is a key set full of edge cases for ranges and prefixes.
var listKeys = []string{"", "\x00", "a", "a\x00", "a\xff", "a\xff\xff", "ab", "aba", "abb", "ac", "b", "b\x00", "ba", "\xff", "\xff\xff", "\xff\xff\x00"}

var (
	listPrefixes = []string{"", "a", "ab", "a\xff", "\xff", "\xff\xff", "c"}
	listBounds   = []string{"", "\x00", "a", "ab", "ab\x00", "abb", "b", "\xff", "\xff\xff\xff"}
)

// randomModel drives a shard with random operations over a small key space
// and checks every read against a plain map, with Apply delayed at random so
// that reads hit the overlay.
func randomModel(t *testing.T, kind backendKind, seed uint64) {
	e, tb := newEngine(t, kind.open(t, t.TempDir()), EngineOptions{CacheBytes: 600})
	rng := rand.New(rand.NewPCG(seed, 7))
	s := e.Shard(ShardID{"rand", fmt.Sprint(seed)})
	durable, event := map[string][]byte{}, map[string][]byte{}
	alarm, evAlarm := int64(0), int64(0)
	keys := []string{"", "a", "ab", "abc", "b", "b\x00", "ba", "c", "\xff"}
	key := func() string { return keys[rng.IntN(len(keys))] }
	var pendings []*Pending
	for step := range 3000 {
		if rng.IntN(50) == 0 {
			tb.mu.Lock()
			tb.delay = time.Duration(rng.IntN(300)) * time.Microsecond
			tb.mu.Unlock()
		}
		switch op := rng.IntN(100); {
		case op < 25:
			k, v := key(), fmt.Sprint(step)
			must(t, s.Put(k, []byte(v), rng.IntN(4) == 0))
			event[k] = []byte(v)
		case op < 35:
			k := key()
			_, want := event[k]
			got, err := s.Delete(k)
			must(t, err)
			if got != want {
				t.Fatalf("step %d: Delete(%q) = %v; want %v", step, k, got, want)
			}
			delete(event, k)
		case op < 37:
			must(t, s.DeleteAll())
			clear(event)
		case op < 40:
			evAlarm = int64(rng.IntN(3)) * 1000
			if evAlarm > 0 {
				must(t, s.SetAlarm(evAlarm))
			} else {
				must(t, s.DeleteAlarm())
			}
		case op < 55:
			k := key()
			v, ok := mustGet(t, s, k)
			wv, wok := event[k]
			if ok != wok || v != string(wv) {
				t.Fatalf("step %d: Get(%q) = %q, %v; want %q, %v", step, k, v, ok, wv, wok)
			}
		case op < 65:
			o := abi.ListOptions{Prefix: []string{"", "a", "b", "ab"}[rng.IntN(4)], Reverse: rng.IntN(2) == 0, Limit: uint32(rng.IntN(4))}
			switch rng.IntN(3) {
			case 1:
				o.HasStart, o.Start = true, key()
			case 2:
				o.HasStartAfter, o.StartAfter = true, key()
			}
			if rng.IntN(2) == 0 {
				o.HasEnd, o.End = true, key()
			}
			got, err := s.List(o)
			must(t, err)
			if want := refList(event, o); !kvsEqual(got, want) {
				t.Fatalf("step %d: List(%+v)\n got %s\nwant %s", step, o, fmtKVs(got), fmtKVs(want))
			}
		case op < 68:
			at, ok, err := s.GetAlarm()
			must(t, err)
			if ok != (evAlarm > 0) || at != evAlarm {
				t.Fatalf("step %d: GetAlarm = %d, %v; want %d", step, at, ok, evAlarm)
			}
		case op < 72:
			s.Abort()
			event = clone(durable)
			evAlarm = alarm
		case op < 73:
			// Everything committed becomes durable, and equal to the model.
			for _, p := range pendings {
				wait(t, p)
			}
			pendings = pendings[:0]
			s.Abort()
			event = clone(durable)
			evAlarm = alarm
			wait(t, s.Commit())
			settle(t, s)
			got, err := tb.Backend.List(s.ID(), abi.ListOptions{})
			must(t, err)
			if want := refList(durable, abi.ListOptions{}); !kvsEqual(got, want) {
				t.Fatalf("step %d: backend\n got %s\nwant %s", step, fmtKVs(got), fmtKVs(want))
			}
			at, ok, err := tb.Backend.GetAlarm(s.ID())
			must(t, err)
			if ok != (alarm > 0) || at != alarm {
				t.Fatalf("step %d: backend alarm = %d, %v; want %d", step, at, ok, alarm)
			}
		default:
			if p := s.Commit(); p != nil {
				pendings = append(pendings, p)
			}
			durable = clone(event)
			alarm = evAlarm
		}
	}
	for _, p := range pendings {
		wait(t, p)
	}
}

// settle waits until every batch the shard submitted is resolved.
func settle(t *testing.T, s *Shard) {
	t.Helper()
	p := &Pending{s: s, seq: s.seq, gen: s.gen}
	wait(t, p)
}

func clone(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
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
