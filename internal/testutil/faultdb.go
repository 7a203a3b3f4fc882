package testutil

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

// SQL fault modes of FaultDB.
const (
	SQLOK          = ""
	SQLFail        = "error"               // the batch fails before it runs (ErrSQLDown)
	SQLCrashBefore = "crash_before_commit" // the guest traps; nothing ran
	SQLCrashAfter  = "crash_after_commit"  // the batch commits, then the guest traps
)

// ErrSQLDown is the error of a batch FaultDB fails in mode SQLFail.
var ErrSQLDown = errors.New("injected: the SQL database is unavailable")

// FaultDB wraps a shard's SQL binding (DB) and injects failures into the
// batches that pass: in a crash mode it returns
// hostinternal.ErrInjectedCrash, which traps the calling guest (the
// event's storage writes are lost). The zero mode, SQLOK, passes every
// batch on.
type FaultDB struct {
	DB host.SQLDB

	mu    sync.Mutex
	mode  string
	times int // for a fault mode: calls left before it switches off (0: until Set again)
	calls atomic.Int64
	hits  atomic.Int64
}

// Set switches the mode for the next times batches (times ≤ 0: until
// switched again).
func (d *FaultDB) Set(mode string, times int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mode, d.times = mode, times
}

// Calls returns how many batches reached the wrapper.
func (d *FaultDB) Calls() int { return int(d.calls.Load()) }

// Hits returns how many batches failed or crashed.
func (d *FaultDB) Hits() int { return int(d.hits.Load()) }

func (d *FaultDB) take() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls.Add(1)
	m := d.mode
	if m != SQLOK {
		d.hits.Add(1)
		if d.times > 0 {
			if d.times--; d.times == 0 {
				d.mode = SQLOK
			}
		}
	}
	return m
}

// Batch implements host.SQLDB.
func (d *FaultDB) Batch(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	switch d.take() {
	case SQLFail:
		return nil, ErrSQLDown
	case SQLCrashBefore:
		return nil, fmt.Errorf("injected crash before the SQL commit: %w", hostinternal.ErrInjectedCrash)
	case SQLCrashAfter:
		if _, err := d.DB.Batch(ctx, stmts); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("injected crash after the SQL commit: %w", hostinternal.ErrInjectedCrash)
	}
	return d.DB.Batch(ctx, stmts)
}
