package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host"
)

// DrainReport says what Drain did: whether every buffer shard of this host
// (runtime events, counters) is empty, so that stopping the host leaves
// nothing behind on its disk.
type DrainReport struct {
	Node     string         `json:"node"`
	Empty    bool           `json:"empty"`
	Bindings []DrainBinding `json:"bindings"`
	Duration time.Duration  `json:"duration_ns"`
}

// DrainBinding is one buffer binding of a DrainReport.
type DrainBinding struct {
	Binding string `json:"binding"`
	Shards  int    `json:"shards"`
	// Flushed counts what this drain sent to SQL: events, or counter
	// deltas (a delta sums every increment of one counter).
	Flushed int `json:"flushed"`
	// Pending lists the shards that still hold something (or could not be
	// asked) when the drain ended.
	Pending []PendingShard `json:"pending"`
}

// PendingShard is a shard a drain left non-empty.
type PendingShard struct {
	Shard    int    `json:"shard"`
	Buffered int    `json:"buffered"`
	Inflight int    `json:"inflight,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Drain flushes every runtime-event and counter shard of this host until
// all are empty or wait has passed, and reports what is left: the step
// before stopping a POP for good (docs/OPERATIONS.md, "Running many
// POPs"). It does not stop new writes — take the host out of traffic
// first, or what arrives meanwhile is buffered again. A shard whose flush
// fails (SQL unreachable) is retried until wait passes. Rate-limit shards
// hold nothing that outlives their windows and are left alone.
func (a *API) Drain(ctx context.Context, wait time.Duration) (DrainReport, error) {
	t0 := time.Now()
	deadline := t0.Add(wait)
	rep := DrainReport{Node: a.cfg.NodeID, Bindings: []DrainBinding{}}
	for _, b := range []struct {
		name   string
		shards Shards
		drain  func(ctx context.Context, s int) (flushed int, left PendingShard, err error)
	}{
		{a.cfg.EventBinding, a.events, a.drainEventShard},
		{a.cfg.CounterBinding, a.counter, func(ctx context.Context, s int) (int, PendingShard, error) {
			flushed, buffered, inflight, err := a.drainCounterShardCount(ctx, s, 8)
			p := PendingShard{Shard: s, Buffered: buffered, Inflight: inflight}
			if err != nil { // say what the shard holds, if it answers
				if resp, perr := a.callShard(ctx, a.counter, s, http.MethodGet, "/pending", nil); perr == nil {
					var pr pendingReply
					if json.Unmarshal(resp.Body, &pr) == nil && pr.Buffered != nil && pr.Inflight != nil {
						p.Buffered, p.Inflight = *pr.Buffered, *pr.Inflight
					}
				}
			}
			return flushed, p, err
		}},
	} {
		db := DrainBinding{Binding: b.name, Pending: []PendingShard{}}
		if _, missing := b.shards.(missingShards); missing {
			rep.Bindings = append(rep.Bindings, db)
			continue
		}
		db.Shards = b.shards.Shards()
		todo := make([]int, db.Shards)
		for i := range todo {
			todo[i] = i
		}
		for {
			left := a.drainRound(ctx, todo, b.drain, &db.Flushed)
			db.Pending = left
			if len(left) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			todo = todo[:0]
			for _, p := range left {
				todo = append(todo, p.Shard)
			}
			select {
			case <-time.After(250 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		rep.Bindings = append(rep.Bindings, db)
	}
	rep.Empty = true
	for _, b := range rep.Bindings {
		rep.Empty = rep.Empty && len(b.Pending) == 0
	}
	rep.Duration = time.Since(t0)
	ev := a.log.Info()
	if !rep.Empty {
		ev = a.log.Warn()
	}
	ev.Bool("empty", rep.Empty).Dur("duration", rep.Duration).Msg("drain done")
	if err := ctx.Err(); err != nil && !rep.Empty {
		return rep, fmt.Errorf("drain: %w", err)
	}
	return rep, nil
}

// drainRound drains shards (8 at a time) once and returns those left
// non-empty, in shard order, adding what it flushed to *flushed.
func (a *API) drainRound(ctx context.Context, shards []int, drain func(context.Context, int) (int, PendingShard, error), flushed *int) []PendingShard {
	var mu sync.Mutex
	left := []PendingShard{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, s := range shards {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			n, p, err := drain(ctx, s)
			mu.Lock()
			defer mu.Unlock()
			*flushed += n
			if errors.Is(err, host.ErrUnknownBinding) {
				return
			}
			if err != nil {
				p.Error = err.Error()
			}
			if err != nil || p.Buffered > 0 || p.Inflight > 0 {
				left = append(left, p)
			}
		}()
	}
	wg.Wait()
	sort.Slice(left, func(i, j int) bool { return left[i].Shard < left[j].Shard })
	return left
}

// eventFlushReply is RUNTIME_EVENT_SHARD's POST /flush answer.
type eventFlushReply struct {
	Flushed  *int `json:"flushed"`
	Buffered *int `json:"buffered"`
}

// drainEventShard flushes one runtime-event shard (a flush takes up to
// 1000 events) until it holds none, at most 50 flushes.
func (a *API) drainEventShard(ctx context.Context, s int) (int, PendingShard, error) {
	p := PendingShard{Shard: s}
	flushed := 0
	for i := 0; i < 50; i++ {
		resp, err := a.callShard(ctx, a.events, s, http.MethodPost, "/flush", nil)
		if err != nil { // say what the shard holds, if it answers
			if st, serr := a.callShard(ctx, a.events, s, http.MethodGet, "/stats", nil); serr == nil {
				var r eventFlushReply
				if json.Unmarshal(st.Body, &r) == nil && r.Buffered != nil {
					p.Buffered = *r.Buffered
				}
			}
			return flushed, p, fmt.Errorf("flush: %w", err)
		}
		var r eventFlushReply
		if err := json.Unmarshal(resp.Body, &r); err != nil || r.Flushed == nil || r.Buffered == nil {
			return flushed, p, fmt.Errorf("unexpected /flush answer: %s", resp.Body)
		}
		flushed += *r.Flushed
		p.Buffered = *r.Buffered
		if p.Buffered == 0 {
			break
		}
	}
	return flushed, p, nil
}
