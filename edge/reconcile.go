package edge

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/plugins/proto/counters"
)

// maxReportedCorrections bounds Report.Corrections (all are logged and
// written to counter_reconcile_log).
const maxReportedCorrections = 1000

// ReconcileLockKey is the PostgreSQL advisory lock a reconcileCounters run
// holds (sqldb.DB.TryLock): one host of a fleet runs it at a time; the
// others skip their turn. The number is "edgercnc" in ASCII.
const ReconcileLockKey int64 = 0x6564676572636e63

// ErrReconcileBusy is ReconcileCounters' error when another host holds
// ReconcileLockKey: the run was skipped, nothing was changed.
var ErrReconcileBusy = errors.New("reconcileCounters is running on another host")

// Time bounds of one run: the query that finds the counters to correct,
// and each correction's transaction.
const (
	reconcileScanTimeout = time.Minute
	reconcileFixTimeout  = 10 * time.Second
)

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
	// Node is the node id of the host that ran it.
	Node string `json:"node"`
	// Checked counts the counters compared with their source rows.
	Checked int `json:"checked"`
	// Corrected counts the counters changed; Corrections lists the first
	// 1000 of them.
	Corrected   int          `json:"corrected"`
	Corrections []Correction `json:"corrections"`
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
// It is safe while writes go on, here and on every other host of a fleet
// sharing the database, and whatever deltas any host still buffers: each
// correction runs in a transaction of its own that sets the counter from
// its source rows and moves the counter's fence (counter_fences) forward.
// Every source-row change reads the fence in its own transaction and its
// delta carries it; a delta is applied only while the fence is unchanged.
// The database orders the correction against each source-row change
// (SQLite: one writer at a time; PostgreSQL: SERIALIZABLE, both read the
// fence and one writes what the other counts), so a change either came
// first — counted by the recount, its delta carrying the old fence and
// dropped wherever it is flushed, even by a host that comes back after
// days — or came after, its delta carrying the new fence and applied.
// Nothing is held or drained for correctness; the run first flushes this
// host's own counter shards only so that deltas already buffered here are
// applied rather than corrected ahead of their flush.
//
// On PostgreSQL one host of a fleet runs it at a time: a run takes the
// advisory lock ReconcileLockKey without waiting, and when another host
// holds it returns ErrReconcileBusy having changed nothing. Runs of one
// process never overlap.
func (a *API) ReconcileCounters(ctx context.Context) (Report, error) {
	a.reconcileMu.Lock()
	defer a.reconcileMu.Unlock()
	t0 := time.Now()
	rep := Report{RanAt: a.now(), Node: a.cfg.NodeID, Corrections: []Correction{}}
	release, ok, err := a.sqlDB.TryLock(ctx, ReconcileLockKey)
	if err != nil {
		return a.reconcileFailed(rep, t0, fmt.Errorf("reconcile counters: %w", err))
	}
	if !ok {
		rep.Duration = time.Since(t0)
		a.m.reconciles.WithLabelValues("busy").Inc()
		a.log.Info().Msg("reconcileCounters skipped: another host holds its lock (it runs there)")
		return rep, ErrReconcileBusy
	}
	defer release()

	a.flushOwnCounterShards(ctx)
	ranAt := rep.RanAt.UnixMilli()
	for i := range counters.Recounts {
		job := &counters.Recounts[i]
		suspects, checked, err := a.suspects(ctx, job)
		rep.Checked += checked
		if err != nil {
			return a.reconcileFailed(rep, t0, fmt.Errorf("reconcile counters: %w", err))
		}
		for _, id := range suspects {
			c, changed, err := a.correct(ctx, job, id, ranAt)
			if err != nil {
				return a.reconcileFailed(rep, t0, fmt.Errorf("reconcile counters: %w", err))
			}
			if !changed {
				continue // it moved into line since the scan
			}
			a.log.Info().Str("table", c.Table).Str("id", c.ID).Str("column", c.Column).Int64("old", c.Old).Int64("new", c.New).
				Msg("reconcileCounters corrected a counter")
			a.m.corrections.Inc()
			rep.Corrected++
			if len(rep.Corrections) < maxReportedCorrections {
				rep.Corrections = append(rep.Corrections, c)
			}
		}
	}
	rep.Duration = time.Since(t0)
	a.m.reconciles.WithLabelValues("ok").Inc()
	a.log.Info().Int("checked", rep.Checked).Int("corrected", rep.Corrected).Dur("duration", rep.Duration).Msg("reconcileCounters done")
	return rep, nil
}

// reconcileFailed logs and counts a failed run; the corrections made
// before the failure stay (each committed on its own) and are reported.
func (a *API) reconcileFailed(rep Report, t0 time.Time, err error) (Report, error) {
	rep.Duration = time.Since(t0)
	a.m.reconciles.WithLabelValues("error").Inc()
	a.log.Error().Err(err).Int("corrected", rep.Corrected).Dur("duration_ms", rep.Duration).
		Msg("reconcileCounters failed; the corrections it made before stay")
	return rep, err
}

// suspects returns the ids whose counter differs from its source-row
// count (a missing row reads as 0) at the scan, and how many it compared.
func (a *API) suspects(ctx context.Context, job *counters.Recount) ([]string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, reconcileScanTimeout)
	defer cancel()
	rows, err := a.db.QueryContext(ctx, job.SQL())
	if err != nil {
		return nil, 0, fmt.Errorf("count %s.%s: %w", job.Table.Name, job.Column, err)
	}
	defer rows.Close()
	var out []string
	checked := 0
	for rows.Next() {
		var id string
		var cur sql.NullInt64
		var want int64
		if err := rows.Scan(&id, &cur, &want); err != nil {
			return nil, checked, fmt.Errorf("count %s.%s: %w", job.Table.Name, job.Column, err)
		}
		checked++
		if cur.Int64 != want {
			out = append(out, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, checked, fmt.Errorf("count %s.%s: %w", job.Table.Name, job.Column, err)
	}
	return out, checked, nil
}

// correct counts one row's source rows again and, in the same
// transaction, sets its counter to the count, moves the counter's fence
// forward and records the correction. changed is false when the counter
// already equals the count.
func (a *API) correct(ctx context.Context, job *counters.Recount, id string, ranAt int64) (Correction, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, reconcileFixTimeout)
	defer cancel()
	c := Correction{Table: job.Table.Name, ID: id, Column: job.Column}
	set, err := counters.SetSQL(c.Table, c.Column)
	if err != nil {
		return c, false, err
	}
	changed := false
	err = a.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		changed = false // a rerun on PostgreSQL counts afresh
		if err := tx.QueryRowContext(ctx, job.CountSQL(), id).Scan(&c.New); err != nil {
			return fmt.Errorf("count %s of %s: %w", job.Source, id, err)
		}
		switch err := tx.QueryRowContext(ctx, job.ValueSQL(), id).Scan(&c.Old); {
		case errors.Is(err, sql.ErrNoRows):
			c.Old = 0
		case err != nil:
			return fmt.Errorf("read %s.%s of %s: %w", c.Table, c.Column, id, err)
		}
		if c.Old == c.New {
			return nil
		}
		if _, err := tx.ExecContext(ctx, set, id, c.New, ranAt); err != nil {
			return fmt.Errorf("correct %s.%s of %s: %w", c.Table, c.Column, id, err)
		}
		if _, err := tx.ExecContext(ctx, counters.BumpFenceSQL, c.Table, id, c.Column); err != nil {
			return fmt.Errorf("fence %s.%s of %s: %w", c.Table, c.Column, id, err)
		}
		if _, err := tx.ExecContext(ctx, counters.LogCorrectionSQL, ranAt, c.Table, id, c.Column, c.Old, c.New, a.cfg.NodeID); err != nil {
			return fmt.Errorf("log correction of %s.%s of %s: %w", c.Table, c.Column, id, err)
		}
		changed = true
		return nil
	})
	return c, changed, err
}

// flushOwnCounterShards flushes this host's counter shards, a few at a
// time, so that deltas already buffered here reach SQL before the scan.
// It is not needed for correctness (see ReconcileCounters): a shard that
// cannot be flushed is only logged.
func (a *API) flushOwnCounterShards(ctx context.Context) {
	n := a.counter.Shards()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for s := 0; s < n; s++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, _, err := a.drainCounterShard(ctx, s, 4); err != nil && !errors.Is(err, host.ErrUnknownBinding) {
				a.log.Debug().Int("shard", s).Err(err).Msg("reconcileCounters: counter shard not flushed first (harmless: its deltas carry their fences)")
			}
		}()
	}
	wg.Wait()
}

// counterFlushReply is COUNTER_SHARD's POST /flush answer.
type counterFlushReply struct {
	Flushed int `json:"flushed"`
}

// drainCounterShard flushes one counter shard until GET /pending shows
// nothing buffered or in flight, at most rounds times (a /flush sends the
// in-flight batch and freezes the buffer into the next one, so a few
// rounds may be needed). It returns what the shard still holds.
func (a *API) drainCounterShard(ctx context.Context, s, rounds int) (buffered, inflight int, err error) {
	_, buffered, inflight, err = a.drainCounterShardCount(ctx, s, rounds)
	return buffered, inflight, err
}

// drainCounterShardCount is drainCounterShard that also counts the deltas
// the flushes sent.
func (a *API) drainCounterShardCount(ctx context.Context, s, rounds int) (flushed, buffered, inflight int, err error) {
	for i := 0; i < rounds; i++ {
		resp, err := a.callShard(ctx, a.counter, s, http.MethodPost, "/flush", nil)
		if err != nil {
			return flushed, buffered, inflight, fmt.Errorf("flush: %w", err)
		}
		var fr counterFlushReply
		if err := json.Unmarshal(resp.Body, &fr); err != nil {
			return flushed, buffered, inflight, fmt.Errorf("decode /flush answer: %w", err)
		}
		flushed += fr.Flushed
		resp, err = a.callShard(ctx, a.counter, s, http.MethodGet, "/pending", nil)
		if err != nil {
			return flushed, buffered, inflight, fmt.Errorf("pending: %w", err)
		}
		var p pendingReply
		if err := json.Unmarshal(resp.Body, &p); err != nil {
			return flushed, buffered, inflight, fmt.Errorf("decode /pending answer: %w", err)
		}
		if p.Buffered == nil || p.Inflight == nil {
			return flushed, buffered, inflight, fmt.Errorf("/pending answer lacks buffered/inflight: %s", resp.Body)
		}
		buffered, inflight = *p.Buffered, *p.Inflight
		if buffered == 0 && inflight == 0 {
			return flushed, 0, 0, nil
		}
	}
	return flushed, buffered, inflight, nil
}
