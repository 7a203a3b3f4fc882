package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

// Storage layout of one board:
//
//	p:<player>                        "<score> <at>"  best score, reached at unix ms <at>
//	s:<^score><at><player>            "<score>"       rank index (16 hex digits each)
//	players                           number of players with a score
//	dirty                             "1" while scores changed since the last snapshot
//	snapshot_at, board                time (unix ms) and board of the pending snapshot
//
// The index key sorts by score descending (the score is stored inverted),
// then by the time the score was reached (earlier first), then by player:
// listing "s:" in key order lists the board in rank order.
const (
	bestPrefix     = "p:"
	indexPrefix    = "s:"
	keyPlayers     = "players"
	keyDirty       = "dirty"
	keySnapshotAt  = "snapshot_at"
	keyBoard       = "board"
	indexHeaderLen = len(indexPrefix) + 2*sdk.SortableLen
)

// entry is a player's best score.
type entry struct {
	player string
	score  int64
	at     int64 // unix ms when the score was reached
}

// indexKey is the entry's key in the rank index.
func (e entry) indexKey() string {
	b := make([]byte, 0, indexHeaderLen+len(e.player))
	b = append(b, indexPrefix...)
	b = sdk.AppendSortable(b, ^uint64(e.score))
	b = sdk.AppendSortable(b, uint64(e.at))
	return string(append(b, e.player...))
}

// decodeIndex parses an index key.
func decodeIndex(key string) (entry, bool) {
	if len(key) <= indexHeaderLen || !strings.HasPrefix(key, indexPrefix) {
		return entry{}, false
	}
	inv, ok1 := sdk.ParseSortable(key[2:18])
	at, ok2 := sdk.ParseSortable(key[18:34])
	if !ok1 || !ok2 {
		return entry{}, false
	}
	return entry{player: key[indexHeaderLen:], score: int64(^inv), at: int64(at)}, true
}

// loadBest returns the player's best score, if any.
func loadBest(player string) (entry, bool, error) {
	v, ok, err := sdk.Storage().Get(bestPrefix + player)
	if err != nil || !ok {
		return entry{}, false, err
	}
	s, a, _ := strings.Cut(string(v), " ")
	score, err1 := strconv.ParseInt(s, 10, 64)
	at, err2 := strconv.ParseInt(a, 10, 64)
	if err1 != nil || err2 != nil {
		return entry{}, false, &corruptError{key: bestPrefix + player}
	}
	return entry{player: player, score: score, at: at}, true, nil
}

// saveBest replaces the player's best score old (if known) by e, keeping
// the index and the player count in step. The writes of one event commit
// together, so the index never disagrees with the scores.
func saveBest(e, old entry, known bool) error {
	st := sdk.Storage()
	if known {
		if _, err := st.Delete(old.indexKey()); err != nil {
			return err
		}
	} else {
		n, err := num(keyPlayers)
		if err != nil {
			return err
		}
		if err := st.Put(keyPlayers, strconv.AppendInt(nil, n+1, 10)); err != nil {
			return err
		}
	}
	v := strconv.AppendInt(nil, e.score, 10)
	if err := st.Put(e.indexKey(), v); err != nil {
		return err
	}
	v = append(v, ' ')
	return st.Put(bestPrefix+e.player, strconv.AppendInt(v, e.at, 10))
}

// markDirty notes that the board changed and, unless a snapshot is already
// pending, schedules one snapshotEvery from now.
func markDirty(board string) error {
	st := sdk.Storage()
	if err := st.Put(keyDirty, []byte("1")); err != nil {
		return err
	}
	if _, pending, err := sdk.GetAlarm(); err != nil || pending {
		return err
	}
	at := time.Now().Add(snapshotEvery)
	if err := sdk.SetAlarm(at); err != nil {
		return err
	}
	if err := st.Put(keyBoard, []byte(board)); err != nil {
		return err
	}
	return st.Put(keySnapshotAt, strconv.AppendInt(nil, at.UnixMilli(), 10))
}

// num reads a decimal counter; absent is 0.
func num(key string) (int64, error) {
	v, ok, err := sdk.Storage().Get(key)
	if err != nil || !ok {
		return 0, err
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, &corruptError{key: key}
	}
	return n, nil
}

// corruptError reports a stored value this code did not write.
type corruptError struct{ key string }

func (e *corruptError) Error() string {
	return "leaderboard: corrupt value at key " + strconv.Quote(e.key)
}
