package main

import (
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

const (
	// snapshotEvery is how long after the first change a snapshot is
	// taken; while scores keep changing that makes one snapshot a minute.
	snapshotEvery = 60 * time.Second
	// snapshotTop is how many of the best players a snapshot copies.
	snapshotTop = 100
)

// The plugin creates its own table: CREATE TABLE IF NOT EXISTS is cheap,
// and runs in the same transaction as the snapshot. BIGINT is 64-bit on
// SQLite and PostgreSQL alike (PostgreSQL's INTEGER is 32-bit), so the
// module runs on both.
const (
	sqlCreate = `CREATE TABLE IF NOT EXISTS leaderboard_snapshots (
	board    TEXT    NOT NULL,
	player   TEXT    NOT NULL,
	score    BIGINT  NOT NULL,
	rank     BIGINT  NOT NULL,
	taken_at BIGINT  NOT NULL,
	PRIMARY KEY (board, taken_at, player)
)`
	sqlDelete = `DELETE FROM leaderboard_snapshots WHERE board = ? AND taken_at = ?`
	sqlInsert = `INSERT INTO leaderboard_snapshots (board, player, score, rank, taken_at) VALUES (?, ?, ?, ?, ?)`
)

// snapshot is the alarm handler: it copies the top of a changed board to
// SQL in one transaction. The snapshot's taken_at is the time it was
// scheduled for, kept in storage until it succeeds, and the transaction
// first deletes rows with that taken_at: a retry after a failure, or a
// repeat after a crash between the SQL commit and the storage commit
// (alarms are at-least-once), rewrites the same snapshot instead of adding
// a second one. A failed snapshot returns its error and the host retries
// it with backoff.
func snapshot(info sdk.AlarmInfo) error {
	st := sdk.Storage()
	if _, dirty, err := st.Get(keyDirty); err != nil || !dirty {
		return err
	}
	board, _, err := st.Get(keyBoard)
	if err != nil {
		return err
	}
	takenAt, err := num(keySnapshotAt)
	if err != nil {
		return err
	}
	if takenAt == 0 {
		takenAt = time.Now().UnixMilli()
	}
	top, err := st.List(sdk.ListOptions{Prefix: indexPrefix, Limit: snapshotTop})
	if err != nil {
		return err
	}
	stmts := make([]sdk.Statement, 0, len(top)+2)
	stmts = append(stmts,
		sdk.Statement{SQL: sqlCreate},
		sdk.Statement{SQL: sqlDelete, Args: []any{string(board), takenAt}})
	for i, kv := range top {
		e, ok := decodeIndex(kv.Key)
		if !ok {
			return &corruptError{key: kv.Key}
		}
		stmts = append(stmts, sdk.Statement{SQL: sqlInsert, Args: []any{string(board), e.player, e.score, int64(i + 1), takenAt}})
	}
	if _, err := sdk.SQL().Batch(stmts); err != nil {
		sdk.Warn("leaderboard snapshot failed; the host retries it",
			"board", string(board), "retry", strconv.Itoa(info.RetryCount), "error", err.Error())
		return err
	}
	if _, err := st.DeleteMulti([]string{keyDirty, keySnapshotAt}); err != nil {
		return err
	}
	sdk.Info("leaderboard snapshot taken",
		"board", string(board), "players", strconv.Itoa(len(top)), "taken_at", strconv.FormatInt(takenAt, 10))
	return nil
}
