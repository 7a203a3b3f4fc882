// Package clock gives the host one source of time that tests can freeze
// and advance: alarms, rate-limit windows and the guests' WASI clocks all
// read it, so a virtual clock drives every one of them alike.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and runs functions later.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop prevents the function from running; it reports whether it did.
	Stop() bool
}

// Real is the system clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Virtual is a clock that moves only when Advance or Set is called. Timers
// that fall due run synchronously inside Advance, in time order.
type Virtual struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers map[int]*vtimer
}

type vtimer struct {
	c  *Virtual
	id int
	at time.Time
	fn func()
}

// NewVirtual returns a virtual clock frozen at start.
func NewVirtual(start time.Time) *Virtual {
	return &Virtual{now: start, timers: map[int]*vtimer{}}
}

// Now returns the virtual time.
func (c *Virtual) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc registers f to run when the clock reaches now+d.
func (c *Virtual) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &vtimer{c: c, id: c.seq, at: c.now.Add(d), fn: f}
	c.timers[t.id] = t
	return t
}

func (t *vtimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, ok := t.c.timers[t.id]
	delete(t.c.timers, t.id)
	return ok
}

// Advance moves the clock forward by d, running due timers in order.
func (c *Virtual) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	c.Set(target)
}

// Set moves the clock to t (never backwards), running due timers in order.
func (c *Virtual) Set(t time.Time) {
	for {
		c.mu.Lock()
		var due []*vtimer
		for _, tm := range c.timers {
			if !tm.at.After(t) {
				due = append(due, tm)
			}
		}
		if len(due) == 0 {
			if t.After(c.now) {
				c.now = t
			}
			c.mu.Unlock()
			return
		}
		sort.Slice(due, func(i, j int) bool {
			if due[i].at.Equal(due[j].at) {
				return due[i].id < due[j].id
			}
			return due[i].at.Before(due[j].at)
		})
		first := due[0]
		delete(c.timers, first.id)
		if first.at.After(c.now) {
			c.now = first.at
		}
		c.mu.Unlock()
		first.fn()
	}
}

// Pending returns how many timers are waiting.
func (c *Virtual) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

var (
	_ Clock = Real{}
	_ Clock = (*Virtual)(nil)
)
