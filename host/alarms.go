package host

import (
	"container/heap"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/storage"
)

// scheduler fires shard alarms. It holds at most one entry per shard (the
// shard's one alarm) in a min-heap and one clock timer for the earliest.
// Storage is the truth: a firing alarm re-reads the shard's persisted alarm
// before running the handler, so a stale entry is harmless.
type scheduler struct {
	h       *Host
	mu      sync.Mutex
	entries map[storage.ShardID]*alarmEntry
	heap    alarmHeap
	timer   clock.Timer
	timerAt int64
	stopped bool
}

// maxTimerWaitMs bounds one scheduler timer (a day); later alarms re-arm.
const maxTimerWaitMs = 24 * 3600 * 1000

type alarmEntry struct {
	id    storage.ShardID
	at    int64 // unix ms
	retry int
	index int
}

func newScheduler(h *Host) *scheduler {
	return &scheduler{h: h, entries: map[storage.ShardID]*alarmEntry{}}
}

// schedule sets the shard's alarm entry to fire at unix ms at.
func (s *scheduler) schedule(id storage.ShardID, at int64, retry int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if e, ok := s.entries[id]; ok {
		e.at, e.retry = at, retry
		heap.Fix(&s.heap, e.index)
	} else {
		e := &alarmEntry{id: id, at: at, retry: retry}
		s.entries[id] = e
		heap.Push(&s.heap, e)
	}
	s.arm()
}

// cancel drops the shard's entry.
func (s *scheduler) cancel(id storage.ShardID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[id]; ok {
		heap.Remove(&s.heap, e.index)
		delete(s.entries, id)
	}
}

// pending returns how many alarms are scheduled, per namespace.
func (s *scheduler) pending() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for id := range s.entries {
		out[id.Namespace]++
	}
	return out
}

// at returns the scheduled time of a shard's alarm.
func (s *scheduler) at(id storage.ShardID) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[id]; ok {
		return e.at, true
	}
	return 0, false
}

// arm makes the timer match the earliest entry. Called with s.mu held.
func (s *scheduler) arm() {
	if len(s.heap) == 0 {
		if s.timer != nil {
			s.timer.Stop()
			s.timer = nil
		}
		return
	}
	first := s.heap[0].at
	if s.timer != nil && s.timerAt == first {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	wait := first - s.h.cfg.Clock.Now().UnixMilli()
	if wait < 0 {
		wait = 0
	}
	// Clamp: a far-future alarm (or one restored from storage) must not
	// overflow time.Duration; the timer re-arms when it fires early.
	if wait > maxTimerWaitMs {
		wait = maxTimerWaitMs
	}
	d := time.Duration(wait) * time.Millisecond
	s.timerAt = first
	s.timer = s.h.cfg.Clock.AfterFunc(d, s.fire)
}

// fire delivers every due alarm to its shard's queue.
func (s *scheduler) fire() {
	now := s.h.cfg.Clock.Now().UnixMilli()
	var due []*alarmEntry
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	for len(s.heap) > 0 && s.heap[0].at <= now {
		e := heap.Pop(&s.heap).(*alarmEntry)
		delete(s.entries, e.id)
		due = append(due, e)
	}
	s.timer = nil
	s.arm()
	s.mu.Unlock()
	for _, e := range due {
		ns, ok := s.h.namespace(e.id.Namespace)
		if !ok {
			continue
		}
		ev := &event{kind: evAlarm, retry: e.retry}
		if s.h.cfg.Placement != nil {
			go ns.deliverAlarm(e.id, ev)
			continue
		}
		if err := ns.enqueue(e.id.Name, ev, nil); err != nil {
			if s.h.isClosing() {
				return
			}
			// Queue full: try again shortly; the alarm stays persisted.
			s.schedule(e.id, now+100, e.retry)
		}
	}
}

func (s *scheduler) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

type alarmHeap []*alarmEntry

func (h alarmHeap) Len() int           { return len(h) }
func (h alarmHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h alarmHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *alarmHeap) Push(x any)        { e := x.(*alarmEntry); e.index = len(*h); *h = append(*h, e) }
func (h *alarmHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
