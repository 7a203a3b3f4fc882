package sqldb

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

// Fencing: the host's own table in a shared database, not an
// application's. A POP of several hosts runs each shard on one host at a
// time; the host owning a shard writes with the ownership's epoch (a
// number larger for every new owner), and the database refuses a write of
// an epoch older than one it has seen for the shard. So a host that lost a
// shard — paused past its lease, or cut off — cannot commit for it once
// the new owner has written.
//
//	edgeshard_fences (binding, shard) → epoch
const fencesTable = `CREATE TABLE IF NOT EXISTS edgeshard_fences (
	binding TEXT NOT NULL,
	shard   TEXT NOT NULL,
	epoch   BIGINT NOT NULL,
	CONSTRAINT edgeshard_fence_stale CHECK (epoch >= 0),
	PRIMARY KEY (binding, shard)
)`

// fenceSQL raises the shard's epoch to ?3, or, when the table holds a
// larger one, fails the transaction: the update writes -1, which the
// CHECK constraint refuses (one statement, the same text on SQLite and
// PostgreSQL, no round trip of its own in PostgreSQL's pipeline).
const fenceSQL = `INSERT INTO edgeshard_fences (binding, shard, epoch) VALUES (?1, ?2, ?3)
ON CONFLICT (binding, shard) DO UPDATE SET epoch = CASE WHEN edgeshard_fences.epoch <= excluded.epoch THEN excluded.epoch ELSE -1 END`

// fenceConstraint names the constraint a stale epoch violates.
const fenceConstraint = "edgeshard_fence_stale"

// BatchFenced is Batch for the owner of a shard at epoch: the statements
// run in one transaction with the raise of the shard's fence, and nothing
// is committed — the error matches storage.ErrFenced — when the database
// has seen a larger epoch for the shard. A batch of reads only is not
// fenced (it writes nothing). The fence table is created on first use.
func (d *DB) BatchFenced(ctx context.Context, binding, shard string, epoch int64, stmts []abi.Statement) ([]abi.Result, error) {
	if len(stmts) > abi.MaxSQLStatements {
		return nil, limitErr("batch has %d statements, at most %d allowed", len(stmts), abi.MaxSQLStatements)
	}
	plans := make([]plan, 1, len(stmts)+1)
	readOnly := true
	for i, st := range stmts {
		p, err := makePlan(st, d.dialect)
		if err != nil {
			return nil, &StatementError{Index: i, Err: err}
		}
		plans = append(plans, p)
		readOnly = readOnly && p.kind == kindRead
	}
	if readOnly && len(stmts) > 0 {
		return d.run(ctx, plans[1:], true)
	}
	if err := d.ensureFences(ctx); err != nil {
		return nil, err
	}
	fence, err := makePlan(abi.Statement{SQL: fenceSQL, Args: []any{binding, shard, epoch}}, d.dialect)
	if err != nil {
		return nil, err
	}
	plans[0] = fence
	res, err := d.run(ctx, plans, false)
	var se *StatementError
	switch {
	case errors.As(err, &se) && se.Index == 0:
		if strings.Contains(Message(se.Err), fenceConstraint) || strings.Contains(se.Err.Error(), fenceConstraint) {
			return nil, storage.ErrFenced
		}
		return nil, &opError{op: "fence", err: se.Err}
	case errors.As(err, &se):
		return nil, &StatementError{Index: se.Index - 1, Err: se.Err}
	case err != nil:
		return nil, err
	}
	return res[1:], nil
}

// ensureFences creates the fence table once. Several hosts may race to
// create it on PostgreSQL (CREATE TABLE IF NOT EXISTS is not safe against
// a concurrent create): the loser tries again and finds it.
func (d *DB) ensureFences(ctx context.Context) error {
	d.fenceMu.Lock()
	defer d.fenceMu.Unlock()
	if d.fenceReady {
		return nil
	}
	var err error
	for range 3 {
		if _, err = d.db.ExecContext(ctx, fencesTable); err == nil {
			d.fenceReady = true
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return &opError{op: "create edgeshard_fences", err: err}
}
