package edge

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/plugins/proto/counters"
)

// maxReportedCorrections bounds Report.Corrections (all are logged and
// written to counter_reconcile_log).
const maxReportedCorrections = 1000

// Correction is one counter reconcileCounters changed.
type Correction struct {
	Table  string `json:"table"`
	ID     string `json:"id"`
	Column string `json:"column"`
	Old    int64  `json:"old"`
	New    int64  `json:"new"`
}

// Report says what one reconcileCounters run did.
type Report struct {
	RanAt    time.Time     `json:"ran_at"`
	Duration time.Duration `json:"duration_ns"`
	// Checked counts the counters compared with their source rows.
	Checked int `json:"checked"`
	// Corrected counts the counters changed; Corrections lists the first
	// 1000 of them.
	Corrected   int          `json:"corrected"`
	Corrections []Correction `json:"corrections"`
	// SkippedShards are counter shards that could not be drained (their
	// flush failed or left deltas buffered); rows routed to them were left
	// alone this run, since their pending deltas would be counted twice.
	SkippedShards []int `json:"skipped_shards,omitempty"`
}

// pendingReply is COUNTER_SHARD's GET /pending answer.
type pendingReply struct {
	Buffered *int `json:"buffered"`
	Inflight *int `json:"inflight"`
}

// ReconcileCounters recomputes the counters that have source rows —
// post_stats.likes from likes, user_counters.followers and following from
// follows — and corrects those that drifted, logging each correction and
// recording it in counter_reconcile_log.
//
// It first holds off new counter writes (they wait, they do not fail),
// then drains every counter shard (POST /flush, then GET /pending must
// show nothing buffered or in flight), so no delta is outstanding while it
// counts; rows of a shard that cannot be drained are skipped. The
// recomputation runs in one SQL transaction. Runs do not overlap.
// reconcileSQLTimeout bounds reconcileCounters' one transaction.
const reconcileSQLTimeout = time.Minute

func (a *API) ReconcileCounters(ctx context.Context) (Report, error) {
	a.reconcileMu.Lock()
	defer a.reconcileMu.Unlock()
	t0 := time.Now()
	rep := Report{RanAt: a.now(), Corrections: []Correction{}}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()

	n := a.counter.Shards()
	skipped := a.drainCounterShards(ctx, n)
	for s := range skipped {
		rep.SkippedShards = append(rep.SkippedShards, s)
	}
	sort.Ints(rep.SkippedShards)
	skip := func(id string) bool { return skipped[shardOf(id, n)] }

	ranAt := rep.RanAt.UnixMilli()
	// A job, not a request: its own bound, outside the request budget.
	tctx, cancel := context.WithTimeout(ctx, reconcileSQLTimeout)
	defer cancel()
	var all []Correction
	err := a.tx(tctx, func(ctx context.Context, tx *sql.Tx) error {
		// On PostgreSQL a transaction that lost to a concurrent one runs
		// again: count afresh.
		rep.Checked, rep.Corrected, rep.Corrections, all = 0, 0, rep.Corrections[:0], all[:0]
		for i := range counters.Recounts {
			job := &counters.Recounts[i]
			fixes, checked, err := a.diff(ctx, tx, job.Table.Name, job.Column, job.SQL(), skip)
			if err != nil {
				return err
			}
			rep.Checked += checked
			for _, c := range fixes {
				if err := a.correct(ctx, tx, c, ranAt); err != nil {
					return err
				}
				all = append(all, c)
				rep.Corrected++
				if len(rep.Corrections) < maxReportedCorrections {
					rep.Corrections = append(rep.Corrections, c)
				}
			}
		}
		return nil
	})
	rep.Duration = time.Since(t0)
	if err != nil {
		a.m.reconciles.WithLabelValues("error").Inc()
		a.log.Error().Err(err).Dur("duration_ms", rep.Duration).Msg("reconcileCounters failed; nothing was changed")
		return Report{RanAt: rep.RanAt, Duration: rep.Duration, Corrections: []Correction{}, SkippedShards: rep.SkippedShards},
			fmt.Errorf("reconcile counters: %w", err)
	}
	for _, c := range all {
		a.log.Info().Str("table", c.Table).Str("id", c.ID).Str("column", c.Column).Int64("old", c.Old).Int64("new", c.New).
			Msg("reconcileCounters corrected a counter")
	}
	a.m.reconciles.WithLabelValues("ok").Inc()
	a.m.corrections.Add(float64(rep.Corrected))
	a.log.Info().Int("checked", rep.Checked).Int("corrected", rep.Corrected).Ints("skipped_shards", rep.SkippedShards).
		Dur("duration", rep.Duration).Msg("reconcileCounters done")
	return rep, nil
}

// diff returns the counters of table.column whose value differs from the
// source-row count (a missing row reads as 0), skipping ids skip says.
func (a *API) diff(ctx context.Context, tx *sql.Tx, table, column, query string, skip func(string) bool) ([]Correction, int, error) {
	rows, err := tx.QueryContext(ctx, query)
	if err != nil {
		return nil, 0, fmt.Errorf("count %s.%s: %w", table, column, err)
	}
	defer rows.Close()
	var out []Correction
	checked := 0
	for rows.Next() {
		var id string
		var cur sql.NullInt64
		var want int64
		if err := rows.Scan(&id, &cur, &want); err != nil {
			return nil, 0, fmt.Errorf("count %s.%s: %w", table, column, err)
		}
		if skip(id) {
			continue
		}
		checked++
		if cur.Int64 != want || (!cur.Valid && want != 0) {
			out = append(out, Correction{Table: table, ID: id, Column: column, Old: cur.Int64, New: want})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("count %s.%s: %w", table, column, err)
	}
	return out, checked, nil
}

// correct sets one counter and records it in counter_reconcile_log (the
// run logs the corrections once its transaction committed).
func (a *API) correct(ctx context.Context, tx *sql.Tx, c Correction, ranAt int64) error {
	q, err := counters.SetSQL(c.Table, c.Column)
	if err == nil {
		_, err = tx.ExecContext(ctx, q, c.ID, c.New, ranAt)
	}
	if err != nil {
		return fmt.Errorf("correct %s.%s of %s: %w", c.Table, c.Column, c.ID, err)
	}
	if _, err := tx.ExecContext(ctx, counters.LogCorrectionSQL, ranAt, c.Table, c.ID, c.Column, c.Old, c.New); err != nil {
		return fmt.Errorf("log correction of %s.%s of %s: %w", c.Table, c.Column, c.ID, err)
	}
	return nil
}

// drainCounterShards drains every counter shard and returns those that
// still hold deltas (or could not be asked). An unconfigured binding holds
// nothing.
func (a *API) drainCounterShards(ctx context.Context, n int) map[int]bool {
	var mu sync.Mutex
	skipped := map[int]bool{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for s := 0; s < n; s++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := a.drainShard(ctx, s)
			if err == nil || errors.Is(err, host.ErrUnknownBinding) {
				return
			}
			a.log.Warn().Int("shard", s).Err(err).Msg("reconcileCounters: counter shard not drained; its rows are skipped this run")
			mu.Lock()
			skipped[s] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	return skipped
}

// drainShard flushes one counter shard until GET /pending shows nothing
// buffered or in flight. A /flush sends the in-flight batch and freezes the
// buffer into the next one, so a few rounds may be needed.
func (a *API) drainShard(ctx context.Context, s int) error {
	const rounds = 8
	var last pendingReply
	for i := 0; i < rounds; i++ {
		if _, err := a.callShard(ctx, a.counter, s, http.MethodPost, "/flush", nil); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
		resp, err := a.callShard(ctx, a.counter, s, http.MethodGet, "/pending", nil)
		if err != nil {
			return fmt.Errorf("pending: %w", err)
		}
		last = pendingReply{}
		if err := json.Unmarshal(resp.Body, &last); err != nil {
			return fmt.Errorf("decode /pending answer: %w", err)
		}
		if last.Buffered == nil || last.Inflight == nil {
			return fmt.Errorf("/pending answer lacks buffered/inflight: %s", resp.Body)
		}
		if *last.Buffered == 0 && *last.Inflight == 0 {
			return nil
		}
	}
	return fmt.Errorf("%d deltas buffered and %d in flight after %d flushes", *last.Buffered, *last.Inflight, rounds)
}
