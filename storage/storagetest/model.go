package storagetest

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

func engineRandomModel(t *testing.T, c *config) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomModel(t, c, seed) })
	}
}

// randomModel drives a shard with random operations over a small key space
// and checks every read against a plain map, with Apply delayed at random so
// that reads hit the overlay.
func randomModel(t *testing.T, c *config, seed uint64) {
	e, tb := newEngine(t, c.open(t), storage.EngineOptions{CacheBytes: 600})
	rng := rand.New(rand.NewPCG(seed, 7))
	s := e.Shard(sid("rand", fmt.Sprint(seed)))
	durable, event := map[string][]byte{}, map[string][]byte{}
	alarm, evAlarm := int64(0), int64(0)
	keys := []string{"", "a", "ab", "abc", "b", "b\x00", "ba", "c", "\xff"}
	key := func() string { return keys[rng.IntN(len(keys))] }
	var pendings []*storage.Pending
	for step := range 3000 {
		if rng.IntN(50) == 0 {
			tb.setDelay(time.Duration(rng.IntN(300)) * time.Microsecond)
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
			event = maps.Clone(durable)
			evAlarm = alarm
		case op < 73:
			// Everything committed becomes durable, and equal to the model.
			for _, p := range pendings {
				wait(t, p)
			}
			pendings = pendings[:0]
			s.Abort()
			event = maps.Clone(durable)
			evAlarm = alarm
			wait(t, s.Commit())
			settle(t, s, alarm)
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
			durable = maps.Clone(event)
			alarm = evAlarm
		}
	}
	for _, p := range pendings {
		wait(t, p)
	}
}
