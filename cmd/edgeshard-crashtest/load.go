package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/internal/eventsbody"
	"github.com/google/uuid"
)

// outcome is what a client knows about one request.
type outcome int

const (
	// notSent: the connection was refused, so the host never saw it.
	notSent outcome = iota
	// acked: a 2xx answer. The host promised the write is durable.
	acked
	// unknown: no answer (the host was killed mid-request) or a 5xx: it
	// may or may not have taken effect.
	unknown
	// rejected: a 4xx answer; the write did not happen. The crash test
	// sends only valid requests, so any is a failure.
	rejected
)

// bound is what the ledger knows of one counter: requests acknowledged
// and requests whose fate is unknown.
type bound struct{ acked, unknown int64 }

// likeBound is what the ledger knows of one post's likes: PUTs and
// DELETEs of distinct (post, user) pairs, acknowledged or unknown.
type likeBound struct{ putAcked, putUnknown, delAcked, delUnknown int64 }

// ledger is the client-side record of every write request and its outcome.
type ledger struct {
	mu       sync.Mutex
	counters map[string]*bound // "views/<post>", "runs/<post>"
	likes    map[string]*likeBound
	events   map[string]outcome // event id → acked or unknown
	rejected []string           // first few 4xx answers
	nReject  int
	requests [4]int64 // by outcome

	// follows by followee and by follower (the fleet mode's load): PUTs
	// and DELETEs of distinct (follower, followee) pairs, as for likes.
	followers map[string]*likeBound
	following map[string]*likeBound

	// pages: per-name counter increments (the cluster mode's load), by
	// page: the numbers the object answered and the unanswered requests.
	pages map[string]*pageBound
}

// pageBound is what the ledger knows of one per-name counter: how often
// each number it answered was acknowledged (more than once: the object
// ran on two hosts at once, or went back in time) and how many requests
// got no answer.
type pageBound struct {
	numbers map[int64]int
	unknown int64
}

func newLedger() *ledger {
	return &ledger{counters: map[string]*bound{}, likes: map[string]*likeBound{}, events: map[string]outcome{},
		followers: map[string]*likeBound{}, following: map[string]*likeBound{}, pages: map[string]*pageBound{}}
}

func (l *ledger) reject(what string) {
	l.nReject++
	if len(l.rejected) < 5 {
		l.rejected = append(l.rejected, what)
	}
}

func (l *ledger) counter(column, post string, o outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.requests[o]++
	k := column + "/" + post
	b := l.counters[k]
	if b == nil {
		b = &bound{}
		l.counters[k] = b
	}
	switch o {
	case acked:
		b.acked++
	case unknown:
		b.unknown++
	}
}

func (l *ledger) like(post string, put bool, o outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.requests[o]++
	l.likes[post] = l.likes[post].note(put, o)
}

// follow records a follow (put) or unfollow of followee by follower.
func (l *ledger) follow(follower, followee string, put bool, o outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.requests[o]++
	l.followers[followee] = l.followers[followee].note(put, o)
	l.following[follower] = l.following[follower].note(put, o)
}

// note counts one request of a pair in b (nil: a new bound) and returns b.
func (b *likeBound) note(put bool, o outcome) *likeBound {
	if b == nil {
		b = &likeBound{}
	}
	switch {
	case o == acked && put:
		b.putAcked++
	case o == acked:
		b.delAcked++
	case o == unknown && put:
		b.putUnknown++
	case o == unknown:
		b.delUnknown++
	}
	return b
}

// page records a per-name increment: acknowledged with the number n the
// object answered, or not.
func (l *ledger) page(page string, n int64, o outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.requests[o]++
	b := l.pages[page]
	if b == nil {
		b = &pageBound{numbers: map[int64]int{}}
		l.pages[page] = b
	}
	switch o {
	case acked:
		b.numbers[n]++
	case unknown:
		b.unknown++
	}
}

func (l *ledger) event(id string, o outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.requests[o]++
	if o == acked || o == unknown {
		if prev, ok := l.events[id]; ok && prev == acked {
			return
		}
		l.events[id] = o
	}
}

// gate lets clients send only while the host is up; the controller closes
// it before a kill and opens it once the restarted host is ready.
type gate struct {
	mu sync.Mutex
	up bool
	ch chan struct{} // closed when up
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.up {
		g.up = true
		close(g.ch)
	}
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.up {
		g.up = false
		g.ch = make(chan struct{})
	}
}

// isOpen reports whether the host is up.
func (g *gate) isOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.up
}

func (g *gate) wait(ctx context.Context) bool {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// loadConfig shapes the client load.
type loadConfig struct {
	base     string // edge API base URL
	clients  int
	interval time.Duration // pause between two requests of one client
	posts    int           // distinct posts
	seed     uint64
	// follows adds follows and unfollows of a few users to the mix (the
	// fleet mode).
	follows bool
	// pages > 0 adds increments of that many per-name counters (pageBinding,
	// the tutorial's page views) to the mix (the cluster mode).
	pages int
}

// pageBinding is the per-name counter binding of the cluster mode: the
// tutorial's page views (examples/tutorial), one object per page.
const pageBinding = "PAGEVIEWS"

// loadHost is one host the clients send to, and its gate.
type loadHost struct {
	base string
	gate *gate
}

// load is the running clients.
type load struct {
	cfg    loadConfig
	led    *ledger
	hosts  []loadHost
	client *http.Client
	stop   context.CancelFunc
	wg     sync.WaitGroup
	sent   atomic.Int64
	// writes counts acknowledged writes (for "load is flowing" checks).
	writes atomic.Int64
}

func startLoad(cfg loadConfig, led *ledger, g *gate) *load {
	return startLoadOn(cfg, led, []loadHost{{cfg.base, g}})
}

// startLoadOn starts clients that spread their requests over hosts: each
// request goes to a host picked at random among those whose gate is open.
func startLoadOn(cfg loadConfig, led *ledger, hosts []loadHost) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cfg: cfg, led: led, hosts: hosts, stop: cancel, client: newClient(cfg.clients)}
	for c := 0; c < cfg.clients; c++ {
		l.wg.Add(1)
		go l.run(ctx, c)
	}
	return l
}

// newClient returns an HTTP client for n concurrent clients.
func newClient(n int) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: n * 2, IdleConnTimeout: 30 * time.Second}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// finish stops the clients after their requests in flight complete.
func (l *load) finish() {
	l.stop()
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

// client state: the (post, user) likes and (follower, followee) follows
// this client got acknowledged and may later take back.
type clientState struct {
	id       int
	rng      *rand.Rand
	users    int
	liked    [][2]string // post, user
	followed [][2]string // follower, followee
	base     string      // the host of the request being sent
}

// pick chooses the host of the next request: one at random among those
// whose gate is open; when every gate is closed, it waits for one.
func (l *load) pick(ctx context.Context, st *clientState) bool {
	n := len(l.hosts)
	start := st.rng.IntN(n)
	for i := 0; i < n; i++ {
		h := l.hosts[(start+i)%n]
		if h.gate.isOpen() {
			st.base = h.base
			return true
		}
	}
	h := l.hosts[start]
	if !h.gate.wait(ctx) {
		return false
	}
	st.base = h.base
	return true
}

func (l *load) run(ctx context.Context, id int) {
	defer l.wg.Done()
	st := &clientState{id: id, rng: rand.New(rand.NewPCG(l.cfg.seed, uint64(id)+1))}
	for ctx.Err() == nil {
		if !l.pick(ctx, st) {
			return
		}
		var o outcome
		r := st.rng.IntN(100)
		if l.cfg.pages > 0 && r%7 == 0 { // one request in seven
			o = l.pageView(st)
		} else if l.cfg.follows && r >= 72 && r < 86 {
			if r < 82 || len(st.followed) == 0 {
				o = l.follow(st)
			} else {
				o = l.unfollow(st)
			}
		} else {
			switch {
			case r < 30:
				o = l.postCounter(st, "views")
			case r < 45:
				o = l.postCounter(st, "runs")
			case r < 65:
				o = l.like(st)
			case r < 72 && len(st.liked) > 0:
				o = l.unlike(st)
			default:
				o = l.events(st)
			}
		}
		l.sent.Add(1)
		if o != acked {
			// The host is probably down: wait a little for the gate.
			time.Sleep(20 * time.Millisecond)
		}
		if l.cfg.interval > 0 {
			select {
			case <-time.After(l.cfg.interval):
			case <-ctx.Done():
			}
		}
	}
}

func (st *clientState) post(n int) string {
	return fmt.Sprintf("ct-post-%02d", st.rng.IntN(n))
}

// do sends one request (detached from the load's context: a request once
// sent runs to its end) and classifies the outcome.
func (l *load) do(st *clientState, method, path, user string, body []byte) (outcome, int, []byte) {
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequest(method, st.base+path, rd)
	if err != nil {
		panic(err)
	}
	req.Header.Set("X-User-Id", user)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := l.client.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return notSent, 0, nil
		}
		return unknown, 0, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return unknown, resp.StatusCode, nil // the answer was cut: we never saw a 2xx
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		l.writes.Add(1)
		return acked, resp.StatusCode, b
	case resp.StatusCode >= 400 && resp.StatusCode <= 499:
		l.led.mu.Lock()
		l.led.reject(fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, b))
		l.led.mu.Unlock()
		return rejected, resp.StatusCode, b
	}
	return unknown, resp.StatusCode, b
}

func (l *load) postCounter(st *clientState, column string) outcome {
	post := st.post(l.cfg.posts)
	o, _, _ := l.do(st, http.MethodPost, "/posts/"+post+"/"+column, fmt.Sprintf("viewer-%d", st.id), nil)
	l.led.counter(column, post, o)
	return o
}

// pageView counts a view of a page (a per-name object) and records the
// number the object answered.
func (l *load) pageView(st *clientState) outcome {
	page := fmt.Sprintf("ct-page-%02d", st.rng.IntN(l.cfg.pages))
	o, _, body := l.do(st, http.MethodPost, "/do/"+pageBinding+"/"+page+"/view", fmt.Sprintf("viewer-%d", st.id), nil)
	var r struct {
		Page  string `json:"page"`
		Views int64  `json:"views"`
	}
	if o == acked && (json.Unmarshal(body, &r) != nil || r.Page != page || r.Views <= 0) {
		l.led.mu.Lock()
		l.led.reject(fmt.Sprintf("POST view of %s: answer %s names no view number", page, body))
		l.led.mu.Unlock()
		o = rejected
	}
	l.led.page(page, r.Views, o)
	return o
}

// wantChanged turns an acknowledged answer that does not say
// "changed":true into a rejection (why, then the body, in the ledger): a
// fresh like or follow must change something, and so must taking back
// one that was acknowledged.
func (l *load) wantChanged(o outcome, body []byte, why string) outcome {
	if o != acked {
		return o
	}
	var r struct {
		Changed bool `json:"changed"`
	}
	if json.Unmarshal(body, &r) == nil && r.Changed {
		return o
	}
	l.led.mu.Lock()
	l.led.reject(why + " " + string(body))
	l.led.mu.Unlock()
	return rejected
}

func (l *load) like(st *clientState) outcome {
	post := st.post(l.cfg.posts)
	st.users++
	user := fmt.Sprintf("c%d-u%d-%x", st.id, st.users, l.cfg.seed&0xffff)
	o := l.setEdge(st, true, "like", post, user, "/posts/"+post+"/like", &st.liked, [2]string{post, user})
	l.led.like(post, true, o)
	return o
}

func (l *load) unlike(st *clientState) outcome {
	pair := takeRandom(st.rng, &st.liked)
	o := l.setEdge(st, false, "like", pair[0], pair[1], "/posts/"+pair[0]+"/like", &st.liked, pair)
	l.led.like(pair[0], false, o)
	return o
}

// setEdge PUTs (on) or DELETEs path as user: a like or follow of target
// that must change something. It books pair in *pairs when the caller may
// take it back later: an acknowledged PUT, or a DELETE that never reached
// the host (the edge is still there).
func (l *load) setEdge(st *clientState, on bool, what, target, user, path string, pairs *[][2]string, pair [2]string) outcome {
	method, want, keep := http.MethodPut, "fresh "+what+" answered", acked
	if !on {
		method, want, keep = http.MethodDelete, "acknowledged "+what+" not found:", notSent
	}
	o, _, body := l.do(st, method, path, user, nil)
	o = l.wantChanged(o, body, fmt.Sprintf("%s %s %s by %s: %s", method, what, target, user, want))
	if o == keep {
		*pairs = append(*pairs, pair)
	}
	return o
}

// takeRandom removes a random pair from *pairs and returns it.
func takeRandom(rng *rand.Rand, pairs *[][2]string) [2]string {
	i := rng.IntN(len(*pairs))
	pair := (*pairs)[i]
	(*pairs)[i] = (*pairs)[len(*pairs)-1]
	*pairs = (*pairs)[:len(*pairs)-1]
	return pair
}

// followees are the users the fleet mode's clients follow.
const followees = 12

// follow makes a fresh user (this client's) follow one of the followees.
func (l *load) follow(st *clientState) outcome {
	followee := fmt.Sprintf("ct-user-%02d", st.rng.IntN(followees))
	st.users++
	follower := fmt.Sprintf("ct-fan-%d-%d-%x", st.id, st.users, l.cfg.seed&0xffff)
	o := l.setEdge(st, true, "follow", followee, follower, "/users/"+followee+"/follow", &st.followed, [2]string{follower, followee})
	l.led.follow(follower, followee, true, o)
	return o
}

// unfollow takes back a follow this client got acknowledged.
func (l *load) unfollow(st *clientState) outcome {
	pair := takeRandom(st.rng, &st.followed)
	o := l.setEdge(st, false, "follow", pair[1], pair[0], "/users/"+pair[1]+"/follow", &st.followed, pair)
	l.led.follow(pair[0], pair[1], false, o)
	return o
}

// events posts 1-4 runtime events with ids the client chose, so a request
// without an answer is still accounted for by id.
func (l *load) events(st *clientState) outcome {
	n := 1 + st.rng.IntN(4)
	ids := make([]string, n)
	b := eventsbody.Append(nil, n, func(b []byte, i int) []byte {
		ids[i] = uuid.NewString()
		switch st.rng.IntN(10) {
		case 0: // routed by its id
			return fmt.Appendf(b, `{"id":%q,"type":"crash.orphan","payload":{"c":%d}}`, ids[i], st.id)
		case 1: // routed by its run
			return fmt.Appendf(b, `{"id":%q,"type":"crash.run","run_id":"run-%d","payload":{"c":%d}}`, ids[i], st.rng.IntN(40), st.id)
		default:
			return fmt.Appendf(b, `{"id":%q,"type":"crash.step","capsule_id":"cap-%d","payload":{"c":%d,"i":%d}}`, ids[i], st.rng.IntN(64), st.id, i)
		}
	})
	o, status, body := l.do(st, http.MethodPost, "/runtime-events", fmt.Sprintf("emitter-%d", st.id), b)
	switch {
	case o == acked:
		var r struct {
			Accepted int      `json:"accepted"`
			IDs      []string `json:"ids"`
		}
		if json.Unmarshal(body, &r) != nil || r.Accepted != n || strings.Join(r.IDs, ",") != strings.Join(ids, ",") {
			l.led.mu.Lock()
			l.led.reject(fmt.Sprintf("POST /runtime-events: answer %s does not acknowledge ids %v", body, ids))
			l.led.mu.Unlock()
			for _, id := range ids {
				l.led.event(id, unknown)
			}
			return rejected
		}
	case o == unknown && status == http.StatusServiceUnavailable:
		// 503 events_unavailable lists the ids that are durable anyway.
		var r struct {
			IDs []string `json:"ids"`
		}
		if json.Unmarshal(body, &r) == nil {
			durable := map[string]bool{}
			for _, id := range r.IDs {
				durable[id] = true
			}
			for _, id := range ids {
				if durable[id] {
					l.led.event(id, acked)
				} else {
					l.led.event(id, unknown)
				}
			}
			return o
		}
	}
	for _, id := range ids {
		l.led.event(id, o)
	}
	return o
}
