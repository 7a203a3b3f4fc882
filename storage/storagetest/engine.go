package storagetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

// engineCases is the Engine and Shard contract, run by RunEngine.
var engineCases = []testCase{
	{"GetPutDelete", engineGetPutDelete},
	{"CopiesValues", engineCopiesValues},
	{"Multi", engineMulti},
	{"Limits", engineLimits},
	{"PipelinedReadYourWrites", enginePipelinedReadYourWrites},
	{"OutputGate", engineOutputGate},
	{"Abort", engineAbort},
	{"DeleteAll", engineDeleteAll},
	{"Alarms", engineAlarms},
	{"CommitFailure", engineCommitFailure},
	{"UnconfirmedFailureStillResets", engineUnconfirmedFailureStillResets},
	{"PendingWaitAfterReset", enginePendingWaitAfterReset},
	{"BatchAtomicity", engineBatchAtomicity},
	{"GroupCommit", engineGroupCommit},
	{"GroupCommitConcurrentShards", engineGroupCommitConcurrentShards},
	{"MaxGroupAndOrder", engineMaxGroupAndOrder},
	{"Backpressure", engineBackpressure},
	{"UnconfirmedLinger", engineUnconfirmedLinger},
	{"ReadCache", engineReadCache},
	{"HandleReuse", engineHandleReuse},
	{"CloseDrains", engineCloseDrains},
	{"Reopen", engineReopen},
	{"ListLayers", engineListLayers},
	{"RandomModel", engineRandomModel},
}

func engineGetPutDelete(t *testing.T, c *config) {
	s, _, _ := newShard(t, c, storage.EngineOptions{})
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
	must(t, s.Put("nil", nil, false))
	wait(t, s.Commit())
	wantGet(t, s, "nil", "", true)
}

// engineCopiesValues: Put and PutMulti keep copies of the caller's values.
func engineCopiesValues(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
	v := []byte("1")
	must(t, s.Put("a", v, false))
	multi := kvs("b", "2")
	must(t, s.PutMulti(multi, false))
	v[0], multi[0].Value[0] = 'X', 'X'
	wantGet(t, s, "a", "1", true)
	wantGet(t, s, "b", "2", true)
	wait(t, s.Commit())
	v[0], multi[0].Value[0] = 'Y', 'Y'
	wantGet(t, s, "a", "1", true)
	wantBackend(t, tb.Backend, id, "a", "1", true)
	wantBackend(t, tb.Backend, id, "b", "2", true)
}

func engineMulti(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
	must(t, s.PutMulti(kvs("a", "1", "b", "2", "a", "3"), false))
	got, err := s.GetMulti([]string{"b", "x", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if want := kvs("b", "2", "a", "3"); !kvsEqual(got, want) {
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
}

// engineLimits: the Shard refuses keys over abi.MaxKeySize, values over
// abi.MaxValueSize, more than abi.MaxMultiKeys keys in one call and invalid
// arguments, and a refused call writes nothing; exactly at the limits is
// fine.
func engineLimits(t *testing.T, c *config) {
	s, _, _ := newShard(t, c, storage.EngineOptions{})
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
		{"Put long key", s.Put(long, nil, false), storage.ErrKeyTooLarge},
		{"Put big value", s.Put("k", big, false), storage.ErrValueTooLarge},
		{"PutMulti big value", s.PutMulti([]abi.KV{{Key: "a", Value: []byte("1")}, {Key: "b", Value: big}}, false), storage.ErrValueTooLarge},
		{"PutMulti long key", s.PutMulti([]abi.KV{{Key: "a", Value: []byte("1")}, {Key: long}}, false), storage.ErrKeyTooLarge},
		{"PutMulti too many", s.PutMulti(manyKVs, false), storage.ErrTooManyKeys},
		{"Get long key", third(s.Get(long)), storage.ErrKeyTooLarge},
		{"GetMulti too many", second(s.GetMulti(many)), storage.ErrTooManyKeys},
		{"GetMulti long key", second(s.GetMulti([]string{"a", long})), storage.ErrKeyTooLarge},
		{"Delete long key", second(s.Delete(long)), storage.ErrKeyTooLarge},
		{"DeleteMulti too many", second(s.DeleteMulti(many)), storage.ErrTooManyKeys},
		{"DeleteMulti long key", second(s.DeleteMulti([]string{"a", long})), storage.ErrKeyTooLarge},
		{"List start and startAfter", second(s.List(abi.ListOptions{HasStart: true, HasStartAfter: true})), storage.ErrInvalid},
		{"SetAlarm 0", s.SetAlarm(0), storage.ErrInvalid},
		{"SetAlarm negative", s.SetAlarm(-1), storage.ErrInvalid},
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
	keys := make([]string, abi.MaxMultiKeys)
	keys[0] = okKey
	if got, err := s.GetMulti(keys); err != nil || len(got) != 2 {
		t.Fatalf("GetMulti of %d keys = %d entries, %v; want 2", len(keys), len(got), err)
	}
	if n, err := s.DeleteMulti(keys); err != nil || n != 2 {
		t.Fatalf("DeleteMulti of %d keys = %d, %v; want 2", len(keys), n, err)
	}
	wait(t, s.Commit())
	if got, _ := s.List(abi.ListOptions{}); len(got) != 0 {
		t.Fatalf("DeleteMulti left %s", fmtKVs(got))
	}
}

func enginePipelinedReadYourWrites(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
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
	wantAll(t, "event 3", s.List, kvs("a", "1", "b", "2")...)
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
}

func engineOutputGate(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
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
	var nilPending *storage.Pending
	must(t, nilPending.Wait(context.Background()))
}

func engineAbort(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
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
	wantAlarm(t, "after Abort", 500)(s.GetAlarm())
	if p := s.Commit(); p != nil {
		t.Fatal("Commit after Abort has writes")
	}
	if n := tb.batches.Load(); n != 1 {
		t.Fatalf("%d batches applied; want 1", n)
	}
}

func engineDeleteAll(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
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
	wantAll(t, "DeleteAll in flight", s.List, kvs("k05", "after")...)
	mustPut(t, s, "k06", "later")
	p2 := s.Commit()
	tb.release()
	wait(t, p)
	wait(t, p2)
	wantGet(t, s, "k03", "", false)
	wantBackend(t, tb.Backend, id, "k03", "", false)
	wantAll(t, "backend after DeleteAll", backendList(tb.Backend, id), kvs("k05", "after", "k06", "later")...)
	wantAlarm(t, "after DeleteAll (it keeps the alarm)", 1234)(s.GetAlarm())
}

func engineAlarms(t *testing.T, c *config) {
	s, tb, e := newShard(t, c, storage.EngineOptions{})
	wantAlarm(t, "new shard", 0)(s.GetAlarm())
	must(t, s.SetAlarm(1000))
	wantAlarm(t, "the event's own", 1000)(s.GetAlarm())
	wait(t, s.Commit())
	other := e.Shard(sid("ns", "other"))
	must(t, other.SetAlarm(2000))
	wait(t, other.Commit())
	alarms, err := e.Alarms()
	wantAlarms(t, "Engine", alarms, err, storage.Alarm{Shard: other.ID(), At: 2000}, storage.Alarm{Shard: id, At: 1000})
	tb.hold()
	must(t, s.DeleteAlarm())
	wantAlarm(t, "after the event deleted it", 0)(s.GetAlarm())
	p := s.Commit()
	wantAlarm(t, "deletion in flight", 0)(s.GetAlarm())
	tb.release()
	wait(t, p)
	wantAlarm(t, "backend: deletion durable", 0)(tb.Backend.GetAlarm(id))
	must(t, s.SetAlarm(3000))
	must(t, s.DeleteAlarm())
	must(t, s.SetAlarm(4000))
	wait(t, s.Commit())
	wantAlarm(t, "backend", 4000)(tb.Backend.GetAlarm(id))
}

func engineCommitFailure(t *testing.T, c *config) {
	s, tb, e := newShard(t, c, storage.EngineOptions{})
	bystander := e.Shard(sid("ns", "bystander"))
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

	for i, p := range []*storage.Pending{p1, p2} {
		if err := p.Wait(context.Background()); !errors.Is(err, storage.ErrCommitFailed) || !errors.Is(err, errInjected) {
			t.Fatalf("pending %d: Wait = %v; want ErrCommitFailed wrapping the cause", i+1, err)
		}
	}
	wait(t, pb)
	wantErr(t, "Err", s.Err(), storage.ErrCommitFailed)
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
	wantErr(t, "Get on a failed shard", third(s.Get("a")), storage.ErrCommitFailed)
	wantFailed(t, "Commit on a failed shard", s.Commit())

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
}

// engineUnconfirmedFailureStillResets: the failure of an event nobody
// waits for still fails the shard, and Reset recovers it.
func engineUnconfirmedFailureStillResets(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
	tb.failNext(1)
	must(t, s.Put("window", []byte("1"), true))
	if p := s.Commit(); p != nil {
		t.Fatal("an unconfirmed-only event was held")
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the failure of an unconfirmed write did not fail the shard")
		}
		time.Sleep(time.Millisecond)
	}
	s.Reset()
	wantGet(t, s, "window", "", false)
}

// enginePendingWaitAfterReset: a Pending of a failed generation still
// reports the failure after Reset, and the new generation commits.
func enginePendingWaitAfterReset(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
	tb.hold()
	tb.failNext(1)
	mustPut(t, s, "a", "1")
	p := s.Commit()
	tb.waitEntered(t)
	go func() {
		time.Sleep(10 * time.Millisecond)
		tb.release()
	}()
	s.Reset() // waits for the failing batch to resolve
	wantFailed(t, "after Reset", p)
	mustPut(t, s, "b", "2")
	wait(t, s.Commit()) // the new generation commits
	wantGet(t, s, "a", "", false)
}

func engineBatchAtomicity(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
	tb.failNext(1)
	for i := range 10 {
		mustPut(t, s, fmt.Sprint(i), "v")
	}
	must(t, s.SetAlarm(77))
	wantFailed(t, "failed batch", s.Commit())
	s.Reset()
	if got, _ := s.List(abi.ListOptions{}); len(got) != 0 {
		t.Fatalf("part of a failed batch is visible: %s", fmtKVs(got))
	}
	wantAlarm(t, "the alarm of a failed batch", 0)(s.GetAlarm())
	for i := range 10 {
		mustPut(t, s, fmt.Sprint(i), "v")
	}
	wait(t, s.Commit())
	if got, _ := tb.Backend.List(id, abi.ListOptions{}); len(got) != 10 {
		t.Fatalf("backend has %d entries; want 10", len(got))
	}
}

func engineGroupCommit(t *testing.T, c *config) {
	// Pipelined: a whole burst of events becomes one Apply.
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
	tb.hold()
	var last *storage.Pending
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
}

func engineGroupCommitConcurrentShards(t *testing.T, c *config) {
	e, tb := newEngine(t, c.open(t), storage.EngineOptions{})
	tb.setDelay(time.Millisecond) // a disk that takes a while
	const shards, events = 8, 50
	parallel(t, shards, func(i int) error {
		s := e.Shard(sid("ns", fmt.Sprint(i)))
		defer s.Close()
		for j := range events {
			if err := s.Put("k", []byte(fmt.Sprint(j)), false); err != nil {
				return err
			}
			if err := s.Commit().Wait(context.Background()); err != nil {
				return err
			}
		}
		return nil
	})
	commits := int64(shards * events)
	if n := tb.applies.Load(); n >= commits/2 {
		t.Fatalf("%d Apply calls for %d commits waiting on their writes: not grouped", n, commits)
	}
	if n := tb.batches.Load(); n != commits {
		t.Fatalf("%d batches applied; want %d", n, commits)
	}
	for i := range shards {
		wantBackend(t, tb.Backend, sid("ns", fmt.Sprint(i)), "k", fmt.Sprint(events-1), true)
	}
}

func engineMaxGroupAndOrder(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{MaxGroup: 3})
	tb.hold()
	var ps []*storage.Pending
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
}

// engineBackpressure: Commit waits while more than MaxPendingBytes are
// submitted and not yet durable.
func engineBackpressure(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{MaxPendingBytes: 1000})
	tb.hold()
	must(t, s.Put("a", make([]byte, 900), false))
	p1 := s.Commit()
	tb.waitEntered(t)
	must(t, s.Put("b", make([]byte, 900), false))
	committed := make(chan *storage.Pending)
	go func() { committed <- s.Commit() }()
	select {
	case <-committed:
		t.Fatal("Commit went past MaxPendingBytes while the disk was stuck")
	case <-time.After(20 * time.Millisecond):
	}
	tb.release()
	p2 := <-committed
	wait(t, p1)
	wait(t, p2)
}

// engineUnconfirmedLinger: with UnconfirmedLinger the committer gathers
// unconfirmed-only batches into fewer groups (fewer fsyncs), a confirmed
// write ends the wait at once, and Close does not wait it out.
func engineUnconfirmedLinger(t *testing.T, c *config) {
	const linger = 2 * time.Second // long enough that only the ends above can cut it
	e, _ := newEngine(t, c.open(t), storage.EngineOptions{UnconfirmedLinger: linger})
	shards := make([]*storage.Shard, 20)
	for i := range shards {
		shards[i] = e.Shard(sid("ns", fmt.Sprint(i)))
	}
	for i, s := range shards {
		must(t, s.Put("window", []byte(fmt.Sprint(i)), true))
		if p := s.Commit(); p != nil {
			t.Fatal("an unconfirmed-only event was held")
		}
	}
	// A confirmed write arrives while the committer lingers: its response
	// must not wait for the linger.
	t0 := time.Now()
	mustPut(t, shards[0], "count", "1")
	wait(t, shards[0].Commit())
	if d := time.Since(t0); d > linger/2 {
		t.Fatalf("a confirmed commit waited %v behind the linger", d)
	}
	if st := e.Stats(); st.Batches != 21 || st.Groups > 2 {
		t.Fatalf("stats %+v: want the 21 batches in at most 2 groups", st)
	}
	for i, s := range shards {
		wantGet(t, s, "window", fmt.Sprint(i), true)
	}
	// Unconfirmed writes alone, then Close: Close commits them without
	// waiting for the linger to pass.
	must(t, shards[1].Put("window", []byte("x"), true))
	shards[1].Commit()
	t0 = time.Now()
	must(t, e.Close())
	if d := time.Since(t0); d > linger/2 {
		t.Fatalf("Close waited %v behind the linger", d)
	}
}

func engineReadCache(t *testing.T, c *config) {
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
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
}

func engineHandleReuse(t *testing.T, c *config) {
	e, tb := newEngine(t, c.open(t), storage.EngineOptions{})
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
}

// engineCloseDrains: Engine.Close commits what was submitted, then every
// operation returns ErrClosed; a durable backend has it all after a reopen.
func engineCloseDrains(t *testing.T, c *config) {
	open, durable := c.newStore(t)
	tb := wrap(open(t))
	e := storage.NewEngine(tb, storage.EngineOptions{})
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
	wantErr(t, "Get after Close", third(s.Get("first")), storage.ErrClosed)
	wantErr(t, "Put after Close", s.Put("x", nil, false), storage.ErrClosed)
	if err := s.Commit().Wait(context.Background()); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Commit after Close = %v; want ErrClosed", err)
	}
	wantErr(t, "Alarms after Close", second(e.Alarms()), storage.ErrClosed)
	if !durable {
		return
	}
	e2 := storage.NewEngine(open(t), storage.EngineOptions{})
	defer func() { must(t, e2.Close()) }()
	s2 := e2.Shard(id)
	wantGet(t, s2, "first", "1", true)
	wantGet(t, s2, "second", "2", true)
	wantAlarm(t, "after reopen", 99)(s2.GetAlarm())
	alarms, err := e2.Alarms()
	wantAlarms(t, "after reopen", alarms, err, storage.Alarm{Shard: id, At: 99})
}

// engineReopen: a shard's state after DeleteAll, deletions and alarm
// changes is what an Engine over the reopened store sees, and it goes on
// from there.
func engineReopen(t *testing.T, c *config) {
	if c.store == nil {
		t.Skip("the backend cannot be reopened (no WithReopen)")
	}
	open := c.store(t)
	e := storage.NewEngine(open(t), storage.EngineOptions{})
	s := e.Shard(id)
	must(t, s.PutMulti(numbered("old", 20, "v"), false))
	must(t, s.SetAlarm(5))
	wait(t, s.Commit())
	must(t, s.DeleteAll())
	must(t, s.PutMulti(kvs("new", "1", "gone", "x"), false))
	s.Commit()
	if _, err := s.Delete("gone"); err != nil {
		t.Fatal(err)
	}
	must(t, s.DeleteAlarm())
	must(t, s.Put("unconfirmed", []byte("u"), true))
	s.Commit() // Close drains it
	must(t, e.Close())

	for round := range 2 {
		e = storage.NewEngine(open(t), storage.EngineOptions{})
		s = e.Shard(id)
		stage := fmt.Sprint("reopen ", round+1)
		want := kvs("new", "1", "unconfirmed", "u")
		if round == 1 {
			want = kvs("again", "2")
		}
		wantAll(t, stage, s.List, want...)
		wantGet(t, s, "old03", "", false)
		wantAlarm(t, stage, 0)(s.GetAlarm())
		alarms, err := e.Alarms()
		wantAlarms(t, stage, alarms, err)
		must(t, s.DeleteAll())
		mustPut(t, s, "again", "2")
		wait(t, s.Commit())
		must(t, e.Close())
	}
}

func engineListLayers(t *testing.T, c *config) {
	// Data spread over the backend, the overlay (held in flight) and the
	// current event, with deletions and overwrites across layers.
	s, tb, _ := newShard(t, c, storage.EngineOptions{})
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
	limits := []uint32{0, 1, 2, 5}
	checkListOptions(t, "three layers", s.List, model, limits)
	p := s.Commit()
	checkListOptions(t, "two layers", s.List, model, limits)
	tb.release()
	wait(t, p)
	mustPut(t, s, "zz", "z")
	s.Abort()
	wait(t, s.Commit())
	checkListOptions(t, "durable", s.List, model, limits)
	// And with a DeleteAll in the event.
	must(t, s.DeleteAll())
	clear(model)
	put("ab", "only")
	checkListOptions(t, "after DeleteAll", s.List, model, limits)
}
