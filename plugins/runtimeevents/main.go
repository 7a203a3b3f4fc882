// Command runtimeevents is RuntimeEventShard: a durable buffer of
// normalised runtime events that flushes them to the SQL table
// runtime_events (deduplicated by id) and to analytics, in batches. The
// line format, field limits and insert are plugins/proto/events'; see
// README.md and ../PROTOCOLS.md.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared \
//
//	-o runtimeevents.wasm ./plugins/runtimeevents
package main

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/plugins/internal/shardkit"
	"github.com/edgeshard/edgeshard/plugins/proto"
	"github.com/edgeshard/edgeshard/plugins/proto/events"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: router.Fetch, Alarm: alarm})
}

var router = sdk.Router{Answer405: true, Routes: []sdk.Route{
	{Method: "POST", Path: "/enqueue", Handle: enqueue},
	{Method: "POST", Path: "/flush", Handle: flushNow},
	{Method: "GET", Path: "/stats", Handle: stats},
}}

// Log codes (the seed's contract).
const (
	CodeFlushOK     = "E-VIBECODR-2130"
	CodeFlushFailed = "E-VIBECODR-2131"
)

// Tunables. The numbers of the seed: flush at 100 buffered events, or 5 s
// after the first one; retry a failed flush after 1 s.
const (
	FlushAt       = 100
	FlushDelay    = 5 * time.Second
	RetryDelay    = 1 * time.Second
	MaxPerEnqueue = events.MaxPerCall // events one /enqueue may carry
	MaxPerFlush   = 1000              // events one flush (one SQL batch) carries at most
	MaxFlushBytes = 8 << 20           // and at most this many bytes of event lines
)

// Storage keys.
const (
	eventPrefix  = "ev:"                // + 20-digit sequence → the event line
	seqKey       = "meta:seq"           // "head,next": buffered events are [head, next)
	lastFlushKey = "meta:last_flush_ms" // unix ms of the last successful flush
	retryKey     = "meta:retry_at"      // unix ms before which inline flushes are skipped
)

// eventKey returns the storage key of sequence number seq.
func eventKey(seq int64) string {
	var b [3 + 20]byte
	copy(b[:], eventPrefix)
	s := strconv.AppendInt(b[3:3], seq, 10)
	pad := 20 - len(s)
	copy(b[3+pad:], s)
	for i := 3; i < 3+pad; i++ {
		b[i] = '0'
	}
	return string(b[:])
}

// loadSeq returns the buffer's bounds.
func loadSeq() (head, next int64, err error) {
	v, ok, err := sdk.Storage().Get(seqKey)
	if err != nil || !ok {
		return 0, 0, err
	}
	h, n, found := strings.Cut(string(v), ",")
	hv, ok1 := proto.ParseInt(h)
	nv, ok2 := proto.ParseInt(n)
	if !found || !ok1 || !ok2 || hv > nv {
		return 0, 0, errors.New("malformed " + seqKey + ": " + string(v))
	}
	return hv, nv, nil
}

func storeSeq(head, next int64) error {
	b := strconv.AppendInt(make([]byte, 0, 24), head, 10)
	b = append(b, ',')
	return sdk.Storage().Put(seqKey, strconv.AppendInt(b, next, 10))
}

func getInt(key string) (int64, bool, error) {
	v, ok, err := sdk.Storage().Get(key)
	if err != nil || !ok {
		return 0, false, err
	}
	n, good := proto.ParseInt(string(v))
	return n, good, nil
}

// shardName returns the shard's name for logs ("unknown" if the host never
// said).
func shardName(req *sdk.Request) string {
	name, err := shardkit.ShardName(req)
	if err != nil {
		sdk.Warn("could not read the shard name", "error", err.Error())
	}
	return shardkit.LogName(name)
}

// enqueue buffers the events durably (one key each) and flushes inline
// when the buffer holds FlushAt or more. Its writes are all or nothing: a
// storage failure part-way aborts the event.
func enqueue(req *sdk.Request) *sdk.Response {
	lines, bad := ParseBody(string(req.Body), MaxPerEnqueue)
	if bad != nil {
		return bad
	}
	shard := shardName(req)
	head, next, err := loadSeq()
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	wasEmpty := head == next
	kvs := make([]abi.KV, 0, min(len(lines), abi.MaxMultiKeys))
	for i, line := range lines {
		kvs = append(kvs, abi.KV{Key: eventKey(next + int64(i)), Value: []byte(line)})
		if len(kvs) == abi.MaxMultiKeys || i == len(lines)-1 {
			if err := sdk.Storage().PutMulti(kvs); err != nil {
				shardkit.Abort("buffer events", err)
			}
			kvs = kvs[:0]
		}
	}
	next += int64(len(lines))
	if err := storeSeq(head, next); err != nil {
		shardkit.Abort("store sequence", err)
	}
	now := shardkit.NowMs()
	flushed := 0
	if next-head >= FlushAt && !backingOff(now) {
		n, err := flush(shard, head, next, now)
		flushed = n
		head += int64(n)
		if err != nil {
			return accepted(len(lines), next-head, 0)
		}
	}
	switch {
	case head == next:
		deleteAlarm()
	case flushed > 0:
		shardkit.SetAlarm(now) // more than one flush's worth was buffered: drain
	case wasEmpty:
		shardkit.SetAlarm(now + FlushDelay.Milliseconds())
	default:
		if _, ok, err := sdk.GetAlarm(); err == nil && !ok {
			shardkit.SetAlarm(now + FlushDelay.Milliseconds()) // repair a lost alarm
		}
	}
	return accepted(len(lines), next-head, flushed)
}

func accepted(n int, buffered int64, flushed int) *sdk.Response {
	b := append(make([]byte, 0, 64), '{')
	b = sdk.AppendJSONInt(b, "accepted", int64(n))
	b = sdk.AppendJSONInt(b, "buffered", buffered)
	b = sdk.AppendJSONInt(b, "flushed", int64(flushed))
	return sdk.RawJSON(202, append(b, '}'))
}

// backingOff reports whether a flush failed less than RetryDelay ago: the
// retry alarm will flush, so requests do not each hit a failing database.
func backingOff(now int64) bool {
	at, ok, err := getInt(retryKey)
	return err == nil && ok && now < at
}

func deleteAlarm() {
	if _, ok, err := sdk.GetAlarm(); err == nil && ok {
		if err := sdk.DeleteAlarm(); err != nil {
			shardkit.Abort("delete alarm", err)
		}
	}
}

// flush sends the oldest buffered events (at most MaxPerFlush, and
// MaxFlushBytes) as ONE SQL batch of multi-row INSERT ... ON CONFLICT(id)
// DO NOTHING, then writes one analytics data point per event and deletes
// the flushed keys. It returns how many buffered events it removed. On
// failure the buffer is kept, E-VIBECODR-2131 is logged and the alarm is
// set to retry after RetryDelay.
func flush(shard string, head, next, now int64) (int, error) {
	t0 := time.Now()
	kvs, err := sdk.Storage().List(sdk.ListOptions{Prefix: eventPrefix, Limit: MaxPerFlush})
	if err != nil {
		return 0, flushFailed(shard, int(next-head), t0, now, err)
	}
	evs := make([]events.Event, 0, len(kvs))
	take, size := 0, 0
	seen := make(map[string]struct{}, len(kvs))
	for _, kv := range kvs {
		if take > 0 && size+len(kv.Value) > MaxFlushBytes {
			break
		}
		take++
		size += len(kv.Value)
		ev, le := events.ParseLine(string(kv.Value))
		if le != nil {
			// Lines are validated before they are stored, so this is
			// corruption: drop the event rather than block the buffer.
			sdk.Error("dropping an unreadable buffered event", "key", kv.Key, "error", le.Msg)
			continue
		}
		if _, dup := seen[ev.ID]; dup {
			continue // the same id twice in one flush: one row, one point
		}
		seen[ev.ID] = struct{}{}
		evs = append(evs, ev)
	}
	kvs = kvs[:take]
	if take == 0 {
		// The bounds claim events that are not there (only after storage
		// corruption): forget them so the count heals.
		sdk.Error("buffer bounds without events; resetting them", "shard", shard, "head", strconv.FormatInt(head, 10), "next", strconv.FormatInt(next, 10))
		if err := storeSeq(next, next); err != nil {
			shardkit.Abort("store sequence", err)
		}
		return int(next - head), nil
	}
	if len(evs) > 0 {
		stmts := make([]sdk.Statement, 0, (len(evs)+events.RowsPerInsert-1)/events.RowsPerInsert)
		for i := 0; i < len(evs); i += events.RowsPerInsert {
			chunk := evs[i:min(i+events.RowsPerInsert, len(evs))]
			args := make([]any, 0, len(chunk)*events.NumFields)
			for j := range chunk {
				args = chunk[j].AppendArgs(args)
			}
			stmts = append(stmts, sdk.Statement{SQL: events.InsertSQL(len(chunk)), Args: args})
		}
		if _, err := sdk.SQL().Batch(stmts); err != nil {
			return 0, flushFailed(shard, take, t0, now, err)
		}
		rejected := 0
		var lastErr error
		ae := sdk.Analytics()
		for i := range evs {
			if err := ae.WriteDataPoint(dataPoint(&evs[i])); err != nil {
				rejected++
				lastErr = err
			}
		}
		if rejected > 0 {
			sdk.Warn("analytics rejected runtime event data points", "shard", shard, "rejected", strconv.Itoa(rejected), "error", lastErr.Error())
		}
	}
	keys := make([]string, 0, min(take, abi.MaxMultiKeys))
	for i, kv := range kvs {
		keys = append(keys, kv.Key)
		if len(keys) == abi.MaxMultiKeys || i == len(kvs)-1 {
			if _, err := sdk.Storage().DeleteMulti(keys); err != nil {
				shardkit.Abort("delete flushed events", err)
			}
			keys = keys[:0]
		}
	}
	last, _ := proto.ParseInt(strings.TrimPrefix(kvs[take-1].Key, eventPrefix))
	newHead := max(head+int64(take), last+1)
	if err := storeSeq(min(newHead, next), next); err != nil {
		shardkit.Abort("store sequence", err)
	}
	if err := sdk.Storage().Put(lastFlushKey, strconv.AppendInt(nil, now, 10)); err != nil {
		shardkit.Abort("store flush time", err)
	}
	if _, err := sdk.Storage().Delete(retryKey); err != nil {
		shardkit.Abort("clear retry time", err)
	}
	sdk.Info("runtime events flushed", "code", CodeFlushOK, "shard", shard,
		"count", strconv.Itoa(take), "duration_ms", strconv.FormatInt(time.Since(t0).Milliseconds(), 10))
	return take, nil
}

// flushFailed logs E-VIBECODR-2131 and schedules the retry.
func flushFailed(shard string, count int, t0 time.Time, now int64, err error) error {
	sdk.Error("runtime event flush failed", "code", CodeFlushFailed, "shard", shard,
		"count", strconv.Itoa(count), "duration_ms", strconv.FormatInt(time.Since(t0).Milliseconds(), 10),
		"error", err.Error())
	retry := now + RetryDelay.Milliseconds()
	if err := sdk.Storage().Put(retryKey, strconv.AppendInt(nil, retry, 10)); err != nil {
		shardkit.Abort("store retry time", err)
	}
	shardkit.SetAlarm(retry)
	return err
}

// flushNow answers POST /flush: one flush now, whatever the buffer size
// and even while backing off.
func flushNow(req *sdk.Request) *sdk.Response {
	shard := shardName(req)
	head, next, err := loadSeq()
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	flushed := 0
	if head < next {
		now := shardkit.NowMs()
		n, err := flush(shard, head, next, now)
		if err != nil {
			return sdk.ErrorJSON(503, "flush_failed", err.Error())
		}
		flushed, head = n, head+int64(n)
		if head == next {
			deleteAlarm()
		} else {
			shardkit.SetAlarm(now)
		}
	}
	b := append(make([]byte, 0, 48), '{')
	b = sdk.AppendJSONInt(b, "flushed", int64(flushed))
	b = sdk.AppendJSONInt(b, "buffered", next-head)
	return sdk.RawJSON(200, append(b, '}'))
}

// stats answers GET /stats.
func stats(*sdk.Request) *sdk.Response {
	head, next, err := loadSeq()
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	last, _, err := getInt(lastFlushKey)
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	b := append(make([]byte, 0, 48), '{')
	b = sdk.AppendJSONInt(b, "buffered", next-head)
	b = sdk.AppendJSONInt(b, "last_flush_ms", last)
	return sdk.RawJSON(200, append(b, '}'))
}

// alarm flushes whatever is buffered: the 5 s flush, the 1 s retry, or
// the continuation of a drain.
func alarm(sdk.AlarmInfo) error {
	head, next, err := loadSeq()
	if err != nil {
		return err
	}
	if head == next {
		return nil
	}
	now := shardkit.NowMs()
	n, err := flush(shardName(nil), head, next, now)
	if err != nil {
		return nil // flush set the retry alarm
	}
	if head+int64(n) < next {
		shardkit.SetAlarm(now)
	}
	return nil
}
