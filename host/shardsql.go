package host

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/shardsql"
)

// ShardSQL, as a binding's SQL, gives each shard of the binding its own
// SQLite database (storage/shardsql) instead of a shared one: the same
// sql_exec calls, no contention between shards, and an event's SQL
// durable together with its key-value writes.
//
// How the two commits stay together: the event's SQL runs in one SQLite
// transaction, committed when the event ends with a redo record (a copy
// of the event's key-value writes and a sequence number N); then the
// key-value writes go to the group committer, followed by a marker batch
// recording N in a reserved namespace (markNamespace). The committer
// applies batches in submission order and a crash loses only a suffix of
// them, so on the shard's next start (recoverShardSQL): marker < N means
// the event's key-value writes may be lost and they are applied again
// from the redo record (idempotent: nothing of the shard committed after
// them survived either). Before an event's first SQL statement every
// earlier write of the shard is made durable, so the record of one event
// only is ever needed.
const ShardSQL = "shard"

// markNamespace holds one marker per shard with its own database: the
// sequence number of its last event whose key-value writes are applied.
// No binding can be named so (New refuses NUL bytes in names).
const markNamespace = "\x00shardsql"

// markKey is the marker's key in the shard's marker storage.
const markKey = "seq"

// shardDB is an actor's side of its shard's own database.
type shardDB struct {
	db      *shardsql.DB   // open since the shard's first start or first SQL call
	mark    *storage.Shard // the marker's storage handle, with db
	checked bool           // recovery ran since the actor started or its storage reset
	seq     uint64         // the event being committed (commit): its marker follows its writes
}

func (a *actor) shardSQLPath() string {
	return shardsql.Path(a.ns.h.cfg.DataDir, a.ns.name, a.shard)
}

// openShardSQL opens the shard's database (creating it) and its marker
// handle.
func (a *actor) openShardSQL() error {
	if a.sq.db != nil {
		return nil
	}
	lim := a.guest().lim.ShardSQLBytes
	_, statErr := os.Stat(a.shardSQLPath())
	db, err := shardsql.Open(a.shardSQLPath(), shardsql.Options{MaxBytes: max(lim, 0)})
	if err != nil {
		return err
	}
	a.sq.db = db
	a.sq.mark = a.ns.h.store.Shard(markID(a.ns.name, a.shard))
	if errors.Is(statErr, os.ErrNotExist) {
		// A new database: its marker (0) is written now, so that every
		// database has one, which a backup finds it by (shardsql_snapshot.go).
		return a.writeMarkDurably(db.Seq())
	}
	return nil
}

// releaseMark closes the marker's storage handle. Like the shard's own
// handle it is shared with the shard's next actor, so whoever removes the
// actor from the namespace releases it, before that actor can exist.
func (a *actor) releaseMark() {
	if a.sq.mark != nil {
		a.sq.mark.Close()
		a.sq.mark = nil
	}
}

// closeShardSQL closes the database (and the marker handle, if still
// open) when the actor exits; outside the namespace's lock, as SQLite's
// last close checkpoints. A next actor of the shard may already have the
// file open: SQLite serialises the two connections.
func (a *actor) closeShardSQL() {
	a.releaseMark()
	if a.sq.db != nil {
		if err := a.sq.db.Close(); err != nil {
			a.log.Warn().Err(err).Msg("closing the shard's database")
		}
	}
	a.sq = shardDB{}
}

// recoverShardSQL runs before the shard's first event (and after its
// storage was reset): a shard with a database whose last recorded event is
// ahead of its key-value marker gets that event's key-value writes again.
// A shard without a database file has nothing to recover and opens none.
func (a *actor) recoverShardSQL() error {
	if !a.ns.shardSQL || a.sq.checked {
		return nil
	}
	if a.sq.db == nil {
		if _, err := os.Stat(a.shardSQLPath()); errors.Is(err, os.ErrNotExist) {
			a.sq.checked = true
			return nil
		}
		if err := a.openShardSQL(); err != nil {
			return err
		}
	}
	ctx := context.Background()
	seq, redo, err := a.sq.db.Redo(ctx)
	if err != nil {
		return err
	}
	if a.sq.mark.Err() != nil {
		a.sq.mark.Reset()
	}
	raw, found, err := a.sq.mark.Get(markKey)
	if err != nil {
		return fmt.Errorf("read the shard's SQL marker: %w", err)
	}
	var applied uint64
	if found && len(raw) == 8 {
		applied = binary.BigEndian.Uint64(raw)
	}
	a.sq.db.Raise(applied)
	if redo != nil && seq > applied {
		b, err := shardsql.DecodeRedo(a.id, redo)
		if err != nil {
			return err
		}
		if err := a.replay(b, seq); err != nil {
			return fmt.Errorf("apply the key-value writes of the shard's last SQL event again: %w", err)
		}
		a.log.Warn().Uint64("event", seq).Uint64("marker", applied).Int("puts", len(b.Puts)).Int("deletes", len(b.Deletes)).
			Msg("shard's database was ahead of its key-value storage (a crash between the two commits); its last event's key-value writes were applied again")
	} else if !found {
		// An imported database, or one from before markers were written
		// at creation: it gets its marker, which a backup finds it by.
		if err := a.writeMarkDurably(applied); err != nil {
			return err
		}
	}
	a.sq.checked = true
	return nil
}

// replay applies an event's key-value writes again, with its marker, and
// waits until they are durable.
func (a *actor) replay(b storage.Batch, seq uint64) error {
	s := a.store
	if b.DeleteAll {
		if err := s.DeleteAll(); err != nil {
			return err
		}
	}
	for i := 0; i < len(b.Puts); i += abi.MaxMultiKeys {
		if err := s.PutMulti(b.Puts[i:min(i+abi.MaxMultiKeys, len(b.Puts))], false); err != nil {
			return err
		}
	}
	for _, k := range b.Deletes {
		if _, err := s.Delete(k); err != nil {
			return err
		}
	}
	switch {
	case b.SetAlarm > 0:
		if err := s.SetAlarm(b.SetAlarm); err != nil {
			return err
		}
		a.alarmSet, a.alarmAt = true, b.SetAlarm
	case b.DelAlarm:
		if err := s.DeleteAlarm(); err != nil {
			return err
		}
		a.alarmDeleted = true
	}
	p := a.commit()
	a.writeMark(seq)
	if err := p.Wait(context.Background()); err != nil {
		return err
	}
	return a.sq.mark.Submitted().Wait(context.Background())
}

// writeMarkDurably writes the marker of event seq and waits until it is
// durable.
func (a *actor) writeMarkDurably(seq uint64) error {
	if err := a.putMark(seq, false); err != nil {
		return fmt.Errorf("write the shard's SQL marker: %w", err)
	}
	return a.sq.mark.Commit().Wait(context.Background())
}

// putMark puts the marker of event seq in the marker's write set (reset
// after a failed one), which the caller commits; a failed put aborts it.
func (a *actor) putMark(seq uint64, unconfirmed bool) error {
	m := a.sq.mark
	if m.Err() != nil {
		m.Reset()
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], seq)
	err := m.Put(markKey, v[:], unconfirmed)
	if err != nil {
		m.Abort()
	}
	return err
}

// writeMark submits the marker of event seq, after the event's writes.
// It is unconfirmed: nothing waits for it (a lost marker only makes the
// next start apply the event's writes again).
func (a *actor) writeMark(seq uint64) {
	if err := a.putMark(seq, true); err != nil {
		a.log.Warn().Err(err).Msg("writing the shard's SQL marker")
		return
	}
	a.sq.mark.Commit()
}

// shardSQL runs a guest's batch in the shard's own database, inside the
// event's transaction.
func (a *actor) shardSQL(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	if err := a.openShardSQL(); err != nil {
		return nil, err
	}
	if !a.sq.db.InEvent() {
		// The event's first statement: every earlier write of the shard,
		// unconfirmed ones too, is made durable first, so that the redo
		// record this event will replace is no longer needed.
		if err := a.store.Submitted().Wait(ctx); err != nil {
			return nil, fmt.Errorf("earlier storage commit failed: %w", err)
		}
	}
	res, err := a.sq.db.Batch(ctx, stmts)
	if errors.Is(err, shardsql.ErrFull) {
		a.limitReached(limitShardSQL, err.Error())
		return nil, &wasm.CallError{Errno: abi.ErrnoQuota, Err: err}
	}
	return res, err
}

// commitShardSQL commits the event's SQL, with the redo record of its
// key-value writes, before they are submitted (actor.commit). On error
// the event fails as a whole.
func (a *actor) commitShardSQL() error {
	if a.sq.db == nil || !a.sq.db.InEvent() {
		return nil
	}
	var redo []byte
	if b, ok := a.store.EventBatch(); ok {
		redo = shardsql.EncodeRedo(b)
	}
	seq, err := a.sq.db.Commit(redo)
	if err != nil {
		return fmt.Errorf("commit the shard's database: %w: %w", storage.ErrCommitFailed, err)
	}
	if f := a.ns.h.sqlCrash; f != nil && f(a.ns.name, a.shard) {
		// As if the process died here: the SQL is durable, the key-value
		// writes and the marker are lost, the shard starts again.
		a.store.Abort()
		a.closeInstance()
		a.closeShardSQL()
		return fmt.Errorf("%w: %w after the shard's SQL commit", storage.ErrCommitFailed, hostinternal.ErrInjectedCrash)
	}
	a.sq.seq = seq
	return nil
}

// limitShardSQL names the size cap in metrics and logs.
const limitShardSQL = "shard_sql_bytes"

// ErrNoShardSQL reports a shard database operation on a binding whose sql
// is not "shard".
var ErrNoShardSQL = errors.New("binding has no database per shard")

// ExportSQL writes a copy of the shard's own database (sql = "shard") to w
// (storage/shardsql.Export), taken between two of the shard's events, after
// any crash repair and once the shard's earlier storage writes are
// durable. A shard that never ran SQL has no database: the error wraps
// os.ErrNotExist.
func (ns *Namespace) ExportSQL(ctx context.Context, shard string, w io.Writer) error {
	return ns.shardSQLOp(ctx, shard, func(a *actor) error {
		if err := a.recoverShardSQL(); err != nil {
			return err
		}
		a.waitLast()
		return shardsql.Export(ctx, a.shardSQLPath(), w)
	})
}

// ImportSQL replaces the shard's own database with the one read from r
// (what ExportSQL wrote; storage/shardsql.Import), between two of the
// shard's events: its instance restarts, and its next event opens the
// imported database. The caller restores the shard's key-value storage to
// the same moment.
func (ns *Namespace) ImportSQL(ctx context.Context, shard string, r io.Reader) error {
	return ns.shardSQLOp(ctx, shard, func(a *actor) error {
		a.waitLast()
		a.closeInstance()
		a.closeShardSQL()
		if err := shardsql.Import(ctx, a.shardSQLPath(), r); err != nil {
			return err
		}
		return a.recoverShardSQL() // gives it its marker
	})
}

// shardSQLOp runs op on the shard's actor between two events and waits
// for it (runOnShard: if ctx ends while op is queued it never runs), ctx
// also bounding the SQLite work itself.
func (ns *Namespace) shardSQLOp(ctx context.Context, shard string, op func(*actor) error) error {
	if !ns.shardSQL {
		return fmt.Errorf("%w: %s", ErrNoShardSQL, ns.name)
	}
	var opErr error
	if err := ns.runOnShard(ctx, shard, func(a *actor) { opErr = op(a) }); err != nil {
		return err
	}
	return opErr
}
