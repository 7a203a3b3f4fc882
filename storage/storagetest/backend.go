package storagetest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

// backendCases is the Backend contract, run by RunBackend.
var backendCases = []testCase{
	{"Empty", backendEmpty},
	{"ApplyGetList", backendApplyGetList},
	{"BatchOrder", backendBatchOrder},
	{"Ownership", backendOwnership},
	{"NamesWithAnyBytes", backendNamesWithAnyBytes},
	{"DeleteAll", backendDeleteAll},
	{"Alarms", backendAlarms},
	{"Limits", backendLimits},
	{"Close", backendClose},
	{"ListOptions", backendListOptions},
	{"ConcurrentReadersSeeWholeBatches", backendConcurrent},
	{"Reopen", backendReopen},
}

// backendEmpty: a new store has no shards, and empty groups and batches
// change nothing.
func backendEmpty(t *testing.T, c *config) {
	b := newBackend(t, c)
	wantBackend(t, b, id, "k", "", false)
	wantBackend(t, b, id, "", "", false)
	wantAll(t, "new store", backendList(b, id))
	wantAlarm(t, "new store", 0)(b.GetAlarm(id))
	alarms, err := b.Alarms()
	wantAlarms(t, "new store", alarms, err)
	apply(t, b)
	apply(t, b, &storage.Batch{Shard: id})
	apply(t, b, &storage.Batch{Shard: id, DeleteAll: true, Deletes: []string{"k"}, DelAlarm: true})
	wantAll(t, "after empty batches", backendList(b, id))
	wantAlarm(t, "after empty batches", 0)(b.GetAlarm(id))
}

func backendApplyGetList(t *testing.T, c *config) {
	b := newBackend(t, c)
	other := sid("ns", "shard2")
	apply(t, b,
		&storage.Batch{Shard: id, Puts: kvs("a", "1", "b", "2", "", "empty")},
		&storage.Batch{Shard: other, Puts: kvs("a", "other")},
		&storage.Batch{Shard: id, Puts: []abi.KV{{Key: "c", Value: []byte{}}}, Deletes: []string{"b", "missing"}},
	)
	wantBackend(t, b, id, "a", "1", true)
	wantBackend(t, b, id, "b", "", false)
	wantBackend(t, b, id, "", "empty", true)
	wantBackend(t, b, id, "c", "", true)
	wantBackend(t, b, other, "a", "other", true)
	wantAll(t, "Apply", backendList(b, id), kvs("", "empty", "a", "1", "c", "")...)
	// The caller owns returned values.
	v, _, _ := b.Get(id, "a")
	v[0] = 'X'
	wantBackend(t, b, id, "a", "1", true)
}

// backendBatchOrder: within a batch DeleteAll, then puts, then deletes, then
// DelAlarm, then SetAlarm; within a group, batch after batch.
func backendBatchOrder(t *testing.T, c *config) {
	b := newBackend(t, c)
	apply(t, b, &storage.Batch{Shard: id, Puts: kvs("k", "1", "gone", "x"), Deletes: []string{"gone"}, DelAlarm: true, SetAlarm: 5})
	wantBackend(t, b, id, "k", "1", true)
	wantBackend(t, b, id, "gone", "", false)
	wantAlarm(t, "DelAlarm then SetAlarm", 5)(b.GetAlarm(id))
	apply(t, b,
		&storage.Batch{Shard: id, Puts: kvs("k", "2", "n", "1")},
		&storage.Batch{Shard: id, Puts: kvs("k", "3"), Deletes: []string{"n"}, DelAlarm: true},
		&storage.Batch{Shard: id, Puts: kvs("n", "again")},
	)
	wantAll(t, "later batches win", backendList(b, id), kvs("k", "3", "n", "again")...)
	wantAlarm(t, "later batches win", 0)(b.GetAlarm(id))
}

// backendOwnership: the backend keeps no slice of a batch after Apply and
// returns values the caller owns.
func backendOwnership(t *testing.T, c *config) {
	b := newBackend(t, c)
	bt := &storage.Batch{Shard: id, Puts: kvs("a", "1", "b", "2")}
	apply(t, b, bt)
	bt.Puts[0].Value[0] = 'X'
	bt.Puts[1] = abi.KV{Key: "z", Value: []byte("9")}
	wantAll(t, "after the batch changed", backendList(b, id), kvs("a", "1", "b", "2")...)
	got, err := b.List(id, abi.ListOptions{})
	must(t, err)
	for i := range got {
		got[i].Value[0] = 'Y'
	}
	wantAll(t, "after the listed values changed", backendList(b, id), kvs("a", "1", "b", "2")...)
}

func backendNamesWithAnyBytes(t *testing.T, c *config) {
	b := newBackend(t, c)
	// Without length prefixes these would collide.
	ids := []storage.ShardID{sid("a", "bc"), sid("ab", "c"), sid("a\x00", "b"), sid("", "a"), sid("a", ""), sid("\xff", "\xff\x00")}
	var batches []*storage.Batch
	var want []storage.Alarm
	for i, x := range ids {
		batches = append(batches, &storage.Batch{Shard: x, Puts: kvs("k", fmt.Sprint(i)), SetAlarm: int64(i + 1)})
		want = append(want, storage.Alarm{Shard: x, At: int64(i + 1)})
	}
	apply(t, b, batches...)
	for i, x := range ids {
		wantBackend(t, b, x, "k", fmt.Sprint(i), true)
		wantAll(t, fmt.Sprint(x), backendList(b, x), kvs("k", fmt.Sprint(i))...)
	}
	alarms, err := b.Alarms()
	wantAlarms(t, "shards with any bytes", alarms, err, want...)
}

func backendDeleteAll(t *testing.T, c *config) {
	b := newBackend(t, c)
	other := sid("ns", "other")
	puts := numbered("k", 50, "v")
	apply(t, b, &storage.Batch{Shard: id, Puts: puts, SetAlarm: 42}, &storage.Batch{Shard: other, Puts: puts[:3]})
	apply(t, b, &storage.Batch{Shard: id, DeleteAll: true, Puts: kvs("k07", "new")})
	wantAll(t, "after DeleteAll", backendList(b, id), kvs("k07", "new")...)
	wantBackend(t, b, id, "k01", "", false)
	wantAlarm(t, "after DeleteAll (it keeps the alarm)", 42)(b.GetAlarm(id))
	wantAll(t, "other shard", backendList(b, other), puts[:3]...)
	// DeleteAll then puts, twice in one group.
	apply(t, b,
		&storage.Batch{Shard: id, DeleteAll: true, Puts: kvs("x", "1")},
		&storage.Batch{Shard: id, Puts: kvs("y", "2")},
		&storage.Batch{Shard: id, DeleteAll: true, Puts: kvs("z", "3")},
	)
	wantAll(t, "two DeleteAlls in a group", backendList(b, id), kvs("z", "3")...)
	// DeleteAll and deletes in one batch: the deletes come after the puts.
	apply(t, b, &storage.Batch{Shard: id, DeleteAll: true, Puts: kvs("p", "1", "q", "2"), Deletes: []string{"q", "z"}})
	wantAll(t, "DeleteAll with puts and deletes", backendList(b, id), kvs("p", "1")...)
}

func backendAlarms(t *testing.T, c *config) {
	b := newBackend(t, c)
	a, cc := sid("n", "a"), sid("n", "c")
	apply(t, b, &storage.Batch{Shard: a, SetAlarm: 100}, &storage.Batch{Shard: cc, SetAlarm: 300})
	wantAlarm(t, "set", 100)(b.GetAlarm(a))
	apply(t, b, &storage.Batch{Shard: a, DelAlarm: true}, &storage.Batch{Shard: cc, SetAlarm: 301})
	wantAlarm(t, "after DelAlarm", 0)(b.GetAlarm(a))
	alarms, err := b.Alarms()
	wantAlarms(t, "after DelAlarm", alarms, err, storage.Alarm{Shard: cc, At: 301})
	// An alarm needs no data.
	wantAll(t, "shard with only an alarm", backendList(b, cc))
}

// backendLimits: Apply refuses a group holding a key over abi.MaxKeySize, a
// value over abi.MaxValueSize or a negative alarm, and applies none of it;
// exactly at the limits is fine, and a batch holds any number of writes.
func backendLimits(t *testing.T, c *config) {
	b := newBackend(t, c)
	long := strings.Repeat("k", abi.MaxKeySize+1)
	refused := []struct {
		name string
		bt   storage.Batch
		want error
	}{
		{"a long key", storage.Batch{Shard: id, Puts: []abi.KV{{Key: long}}}, storage.ErrKeyTooLarge},
		{"a long deleted key", storage.Batch{Shard: id, Deletes: []string{long}}, storage.ErrKeyTooLarge},
		{"a large value", storage.Batch{Shard: id, Puts: []abi.KV{{Key: "k", Value: make([]byte, abi.MaxValueSize+1)}}}, storage.ErrValueTooLarge},
		{"a negative alarm", storage.Batch{Shard: id, SetAlarm: -1}, storage.ErrInvalid},
	}
	for _, r := range refused {
		err := b.Apply([]*storage.Batch{{Shard: id, Puts: kvs("ok", "1"), SetAlarm: 7}, &r.bt})
		wantErr(t, "Apply with "+r.name, err, r.want)
		wantBackend(t, b, id, "ok", "", false) // nothing of the group applied
		wantAlarm(t, "Apply with "+r.name, 0)(b.GetAlarm(id))
	}
	_, err := b.List(id, abi.ListOptions{HasStart: true, HasStartAfter: true})
	wantErr(t, "List with start and startAfter", err, storage.ErrInvalid)

	// Exactly at the limits.
	okKey := strings.Repeat("k", abi.MaxKeySize)
	okVal := strings.Repeat("v", abi.MaxValueSize)
	apply(t, b, &storage.Batch{Shard: id, Puts: kvs(okKey, okVal)})
	wantBackend(t, b, id, okKey, okVal, true)
	wantAll(t, "max-size entry", backendList(b, id), kvs(okKey, okVal)...)
	apply(t, b, &storage.Batch{Shard: id, Deletes: []string{okKey}})
	wantBackend(t, b, id, okKey, "", false)
	// abi.MaxMultiKeys bounds one call of a shard, not a batch: an event
	// may make many calls.
	many := numbered("m", 4*abi.MaxMultiKeys, "v")
	apply(t, b, &storage.Batch{Shard: id, Puts: many})
	wantAll(t, "a batch of many puts", backendList(b, id), many...)
}

// backendClose: Close is idempotent and every later call returns ErrClosed.
func backendClose(t *testing.T, c *config) {
	b := newBackend(t, c)
	apply(t, b, &storage.Batch{Shard: id, Puts: kvs("k", "v"), SetAlarm: 1})
	must(t, b.Close())
	must(t, b.Close())
	_, _, err := b.Get(id, "k")
	wantErr(t, "Get after Close", err, storage.ErrClosed)
	wantErr(t, "Apply after Close", b.Apply([]*storage.Batch{{Shard: id}}), storage.ErrClosed)
	_, err = b.List(id, abi.ListOptions{})
	wantErr(t, "List after Close", err, storage.ErrClosed)
	_, _, err = b.GetAlarm(id)
	wantErr(t, "GetAlarm after Close", err, storage.ErrClosed)
	_, err = b.Alarms()
	wantErr(t, "Alarms after Close", err, storage.ErrClosed)
}

func backendListOptions(t *testing.T, c *config) {
	b := newBackend(t, c)
	model := map[string][]byte{}
	var puts []abi.KV
	for _, k := range listKeys {
		model[k] = []byte("v" + k)
		puts = append(puts, abi.KV{Key: k, Value: model[k]})
	}
	apply(t, b, &storage.Batch{Shard: id, Puts: puts}, &storage.Batch{Shard: sid("ns", "shard\x00"), Puts: puts})
	checkListOptions(t, "backend", backendList(b, id), model, []uint32{0, 1, 3})
}

// backendConcurrent: readers running alongside Apply see each batch whole
// or not at all (the backend is safe for concurrent use).
func backendConcurrent(t *testing.T, c *config) {
	b := newBackend(t, c)
	const rounds, readers, width = 100, 3, 8
	stop := make(chan struct{})
	parallel(t, 1+readers, func(i int) error {
		if i == 0 { // the writer
			defer close(stop)
			for i := range rounds {
				v := fmt.Sprint(i)
				// Every tenth batch starts with a DeleteAll.
				bt := &storage.Batch{Shard: id, DeleteAll: i%10 == 9, Puts: numbered("k", width, v), SetAlarm: int64(i + 1)}
				if err := b.Apply([]*storage.Batch{bt}); err != nil {
					return err
				}
			}
			return nil
		}
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			got, err := b.List(id, abi.ListOptions{})
			if err != nil {
				return err
			}
			if len(got) != 0 && !kvsEqual(got, numbered("k", width, string(got[0].Value))) {
				return fmt.Errorf("List saw part of a batch: %s", fmtKVs(got))
			}
		}
	})
	wantAll(t, "after the writer", backendList(b, id), numbered("k", width, fmt.Sprint(rounds-1))...)
	wantAlarm(t, "after the writer", rounds)(b.GetAlarm(id))
}

// backendReopen: everything applied survives Close and reopening, deletions
// and DeleteAll included, and the reopened store goes on from there.
func backendReopen(t *testing.T, c *config) {
	if c.store == nil {
		t.Skip("the backend cannot be reopened (no WithReopen)")
	}
	open := c.store(t)
	other := sid("ns", "other")
	b := open(t)
	apply(t, b,
		&storage.Batch{Shard: id, Puts: numbered("old", 20, "v"), SetAlarm: 10},
		&storage.Batch{Shard: other, Puts: kvs("x", "1", "y", "2"), SetAlarm: 20},
	)
	apply(t, b,
		&storage.Batch{Shard: id, DeleteAll: true, Puts: kvs("new", "1", "gone", "x")},
		&storage.Batch{Shard: id, Deletes: []string{"gone"}},
		&storage.Batch{Shard: other, Deletes: []string{"y"}, DelAlarm: true},
	)
	must(t, b.Close())

	check := func(stage string, b storage.Backend, wantID []abi.KV) {
		t.Helper()
		wantAll(t, stage, backendList(b, id), wantID...)
		wantAll(t, stage, backendList(b, other), kvs("x", "1")...)
		wantBackend(t, b, id, "old03", "", false)
		wantAlarm(t, stage, 10)(b.GetAlarm(id))
		wantAlarm(t, stage, 0)(b.GetAlarm(other))
		alarms, err := b.Alarms()
		wantAlarms(t, stage, alarms, err, storage.Alarm{Shard: id, At: 10})
	}
	b = open(t)
	check("reopened", b, kvs("new", "1"))
	apply(t, b, &storage.Batch{Shard: id, Puts: kvs("more", "2")})
	check("written after reopening", b, kvs("more", "2", "new", "1"))
	apply(t, b, &storage.Batch{Shard: id, DeleteAll: true, Puts: kvs("last", "3")})
	must(t, b.Close())
	b = open(t)
	defer func() { must(t, b.Close()) }()
	check("reopened twice", b, kvs("last", "3"))
}
