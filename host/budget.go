package host

import (
	"container/list"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The instance memory budget (Config.InstanceMemoryBudgetMiB) bounds the
// memory of live instances, all namespaces together, so that touching
// many objects — one per user, Durable Object style — cannot grow the
// host until the kernel kills it.
//
// Each actor is charged for the instances it holds: their linear memory
// (what wasm.Instance.MemoryBytes reports, refreshed after every event)
// plus instanceOverhead. Before an actor starts an instance it reserves
// room (reserve): past the budget, the least recently used idle actors —
// an instance and no event running or queued — are asked to leave, as if
// their idle_timeout had passed (storage is the truth; the shard restarts
// on its next event). When nothing idle is left to ask, the start waits
// for an instance to turn idle or leave, up to Config.InstanceStartWait,
// then fails with ErrOverloaded (503 shard_overloaded). One instance may
// always start, however large, when nothing else is live.
//
// The idle actors form one list, least recently used first, under one
// mutex: an actor appends itself when its queue runs empty and takes
// itself out when its next event starts, so the list holds exactly the
// actors that may be evicted. A victim is taken off the list and told on
// its evict channel; the actor's own goroutine closes the instance (only
// it touches it) and leaves, or, if an event arrived meanwhile, stays
// and cancels, and the waiting start picks another.
type memBudget struct {
	limit uint64        // bytes; 0: no budget (charges still counted)
	wait  time.Duration // longest wait of a start for room

	mu      sync.Mutex
	used    uint64    // charges of every actor
	freeing uint64    // charges of victims that have not left yet
	idle    list.List // of *actor, least recently used first
	waiters int       // starts waiting for room
	changed chan struct{}
}

// instanceOverhead is what a live instance costs besides its linear
// memory: wazero's module instance (~160 KiB of Go heap for a Go guest,
// host/internal/wasm TestGoGuestFootprint), the actor's goroutine and
// queue, its storage handle and guest output buffer.
const instanceOverhead = 256 << 10

// defaultStartEstimate is what an instance of a namespace whose first
// instance has not started yet is assumed to need: a small Go guest.
const defaultStartEstimate = 4 << 20

func newMemBudget(limit uint64, wait time.Duration) *memBudget {
	return &memBudget{limit: limit, wait: wait, changed: make(chan struct{})}
}

// notify wakes the waiting starts (b.mu held).
func (b *memBudget) notify() {
	if b.waiters > 0 {
		close(b.changed)
		b.changed = make(chan struct{})
	}
}

// charged returns the bytes charged to live instances.
func (b *memBudget) charged() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// reserve adds extra bytes to a's charge for an instance it is about to
// start, asking idle actors to leave and waiting for room as needed; it
// fails with ErrOverloaded once the wait is over. waited reports whether
// it had to wait. Only a's goroutine calls it. (While the host closes,
// actors drain and leave, so a start waiting then finds room soon.)
func (b *memBudget) reserve(a *actor, extra uint64) (waited bool, err error) {
	var timer *time.Timer
	b.mu.Lock()
	b.leaveIdle(a) // a is busy: never its own victim
	for {
		others := b.used - a.charge
		if b.limit == 0 || b.used+extra <= b.limit || others == 0 {
			b.used += extra
			a.charge += extra
			b.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return waited, nil
		}
		b.shed(b.used + extra)
		if timer == nil {
			timer = time.NewTimer(b.wait)
		}
		waited = true
		ch := b.changed
		b.waiters++
		b.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			b.mu.Lock()
			b.waiters--
			used := b.used
			b.mu.Unlock()
			return true, fmt.Errorf("%w: %s/%s: no room in the instance memory budget (%d MiB, %d MiB charged) after waiting %v",
				ErrOverloaded, a.ns.name, a.shard, b.limit>>20, used>>20, b.wait)
		}
		b.mu.Lock()
		b.waiters--
	}
}

// shed asks the least recently used idle actors to leave until want
// bytes, less what victims will free, fit the budget (b.mu held).
func (b *memBudget) shed(want uint64) {
	for b.limit > 0 && want > b.limit+b.freeing {
		e := b.idle.Front()
		if e == nil {
			return
		}
		v := b.idle.Remove(e).(*actor)
		v.lru, v.victim = nil, true
		b.freeing += v.charge
		select {
		case v.evict <- struct{}{}:
		default: // told before, and not listening yet
		}
	}
}

// set makes a's charge bytes (what its instances hold now). A victim
// whose charge changes is no longer one. Only a's goroutine calls it.
func (b *memBudget) set(a *actor, bytes uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.victim {
		b.freeing -= a.charge
		a.victim = false
	}
	if bytes == 0 && a.lru != nil {
		b.idle.Remove(a.lru)
		a.lru = nil
	}
	b.used = b.used - a.charge + bytes
	if bytes < a.charge {
		b.notify()
	}
	a.charge = bytes
	b.shed(b.used)
}

// park puts a, idle now, at the most recently used end of the idle list
// (a holds an instance). Only a's goroutine calls it.
func (b *memBudget) park(a *actor) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.charge == 0 || a.lru != nil || a.victim {
		return
	}
	a.lru = b.idle.PushBack(a)
	b.notify()
	b.shed(b.used)
}

// unpark takes a off the idle list as an event starts; if a was asked to
// leave and has not yet, it is asked no more (and the start that asked
// is woken to pick another). Only a's goroutine calls it.
func (b *memBudget) unpark(a *actor) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.leaveIdle(a)
}

// leaveIdle is unpark with b.mu held.
func (b *memBudget) leaveIdle(a *actor) {
	if a.lru != nil {
		b.idle.Remove(a.lru)
		a.lru = nil
	}
	if a.victim {
		b.freeing -= a.charge
		a.victim = false
		b.notify() // the start counting on it must pick another
	}
}

// isVictim reports whether a has been asked to leave and still should.
func (b *memBudget) isVictim(a *actor) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return a.victim
}

// machineMemory returns how much memory the host process may use: the
// smaller of physical memory (MemTotal in /proc/meminfo) and the memory
// limit of its cgroup (v2 memory.max, v1 memory.limit_in_bytes, of the
// process's own cgroup and of the root the container sees), and where
// that figure comes from; 0 when none can be read (not Linux).
func machineMemory(read func(string) ([]byte, error)) (uint64, string) {
	var limit uint64
	var source string
	if b, err := read("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseUint(f[1], 10, 64); err == nil {
					limit, source = kb<<10, "MemTotal"
				}
			}
		}
	}
	files := []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}
	if b, err := read("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 || parts[2] == "/" {
				continue
			}
			switch {
			case parts[0] == "0" && parts[1] == "":
				files = append(files, "/sys/fs/cgroup"+parts[2]+"/memory.max")
			case strings.Contains(","+parts[1]+",", ",memory,"):
				files = append(files, "/sys/fs/cgroup/memory"+parts[2]+"/memory.limit_in_bytes")
			}
		}
	}
	for _, f := range files {
		b, err := read(f)
		if err != nil {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || v >= 1<<62 { // "max", or v1's "unlimited" (2^63 rounded to pages)
			continue
		}
		if limit == 0 || v < limit {
			limit, source = v, "cgroup limit "+f
		}
	}
	return limit, source
}

// budgetBytes returns the instance memory budget the config asks for (0:
// none) and logs it.
func (h *Host) budgetBytes() uint64 {
	switch n := h.cfg.InstanceMemoryBudgetMiB; {
	case n < 0:
		h.log.Warn().Msg("no instance memory budget: live instances may use all the machine's memory")
		return 0
	case n > 0:
		h.log.Info().Int("budget_mib", n).Msg("instance memory budget")
		return uint64(n) << 20
	}
	b, rule := defaultBudgetBytes()
	h.log.Info().Uint64("budget_mib", b>>20).Str("rule", rule).Msg("instance memory budget")
	return b
}

// defaultBudgetBytes is the budget when the config leaves it at 0: half
// of machineMemory (the rest for the host itself — shard storage caches,
// Badger, the Go heap — and the machine), or 1 GiB when it is unknown.
func defaultBudgetBytes() (uint64, string) {
	mem, source := machineMemory(os.ReadFile)
	if mem == 0 {
		return 1 << 30, "1 GiB: the machine's memory is unknown"
	}
	return mem / 2, "half of " + source
}
