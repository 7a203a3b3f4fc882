// Command counters is CounterShard: a durable, coalescing buffer of
// counter deltas (post_stats, user_counters) flushed to SQL on an alarm as
// clamped updates, exactly once, with a two-phase protocol. The delta line,
// the table whitelist and the statements are plugins/proto/counters'; see
// README.md and ../PROTOCOLS.md.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared \
//
//	-o counters.wasm ./plugins/counters
package main

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/plugins/internal/shardkit"
	"github.com/edgeshard/edgeshard/plugins/proto"
	"github.com/edgeshard/edgeshard/plugins/proto/counters"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: router.Fetch, Alarm: alarm})
}

var router = sdk.Router{Answer405: true, Routes: []sdk.Route{
	{Method: "POST", Path: "/increment", Handle: increment},
	{Method: "POST", Path: "/flush", Handle: flushNow},
	{Method: "GET", Path: "/pending", Handle: pending},
}}

// Log codes (the seed's contract).
const (
	CodeFlushOK     = "E-VIBECODR-2140"
	CodeFlushFailed = "E-VIBECODR-2141"
)

// Tunables: flush 5 s after the first buffered delta, retry after 1 s.
const (
	FlushDelay      = 5 * time.Second
	RetryDelay      = 1 * time.Second
	MaxPerIncrement = counters.MaxPerCall // delta lines one /increment may carry
	MaxBatchRows    = 900                 // rows (statements) one flush carries
	MaxBatchBytes   = 100 << 10           // encoded inflight batch (a storage value ≤ 128 KiB)
	freezeList      = 2000                // buffered keys read per freeze
)

// Storage keys.
const (
	deltaPrefix = "d:"       // + "table \t id \t column" → decimal sum of deltas
	inflightKey = "inflight" // the frozen batch: "seq\n" + delta lines
	seqKey      = "seq"      // last sequence of this node this shard knows SQL applied: "seq[\tnode]"
)

// shardName returns the shard's name, which keys its row in
// counter_flushes. Without the host's header it invents a unique one
// ("unknown-<random>") and keeps it, so two shards never share a sequence.
func shardName(req *sdk.Request) (string, error) {
	name, err := shardkit.ShardName(req)
	if err != nil || name != "" {
		return name, err
	}
	if req == nil {
		return shardkit.UnknownShard, nil // an alarm before any request: nothing to flush
	}
	name = shardkit.UnknownShard + "-" + strconv.FormatUint(rand.Uint64(), 16)
	sdk.Warn("request without "+shardkit.ShardHeader+"; using a generated shard name", "shard", name)
	return name, sdk.Storage().Put(shardkit.ShardKey, []byte(name))
}

// increment buffers the deltas: each (table, id, column) key holds the sum
// of its deltas; a sum of 0 deletes the key. All or nothing: every line is
// validated and every sum checked for overflow before the first write, and
// a storage failure part-way aborts the event.
func increment(req *sdk.Request) *sdk.Response {
	shadow := false
	switch mode := sdk.Query(req, "mode"); mode {
	case "", "primary":
	case "shadow":
		shadow = true
	default:
		return sdk.ErrorJSON(400, "bad_mode", "mode must be primary or shadow, got "+strconv.Quote(mode))
	}
	keys, sums, lines, bad := parseIncrement(string(req.Body))
	if bad != nil {
		return bad
	}
	if shadow {
		return sdk.RawJSON(202, []byte(`{"ok":true,"shadow":true}`))
	}
	// Current sums, 128 keys a call.
	for i := 0; i < len(keys); i += abi.MaxMultiKeys {
		chunk := keys[i:min(i+abi.MaxMultiKeys, len(keys))]
		kvs, err := sdk.Storage().GetMulti(chunk)
		if err != nil {
			return shardkit.Internal("storage", err)
		}
		for _, kv := range kvs {
			old, ok := proto.ParseInt(string(kv.Value))
			if !ok {
				return shardkit.Internal("bad_state", errors.New("buffered delta "+strconv.Quote(kv.Key)+" is not an integer"))
			}
			j := i + indexOf(chunk, kv.Key)
			if addOverflows(old, sums[j]) {
				return sdk.ErrorJSON(400, "delta_overflow", "buffered delta for "+strconv.Quote(strings.TrimPrefix(kv.Key, deltaPrefix))+" would overflow int64")
			}
			sums[j] += old
		}
	}
	if _, err := shardName(req); err != nil {
		shardkit.Abort("store shard name", err)
	}
	var puts []abi.KV
	var dels []string
	for i, k := range keys {
		if sums[i] == 0 {
			dels = append(dels, k)
		} else {
			puts = append(puts, abi.KV{Key: k, Value: strconv.AppendInt(nil, sums[i], 10)})
		}
	}
	for i := 0; i < len(puts); i += abi.MaxMultiKeys {
		if err := sdk.Storage().PutMulti(puts[i:min(i+abi.MaxMultiKeys, len(puts))]); err != nil {
			shardkit.Abort("buffer deltas", err)
		}
	}
	for i := 0; i < len(dels); i += abi.MaxMultiKeys {
		if _, err := sdk.Storage().DeleteMulti(dels[i:min(i+abi.MaxMultiKeys, len(dels))]); err != nil {
			shardkit.Abort("delete zeroed deltas", err)
		}
	}
	if _, ok, err := sdk.GetAlarm(); err != nil {
		shardkit.Abort("read alarm", err)
	} else if !ok && len(puts) > 0 {
		shardkit.SetAlarm(shardkit.NowMs() + FlushDelay.Milliseconds())
	}
	b := append(make([]byte, 0, 32), `{"ok":true`...)
	b = sdk.AppendJSONInt(b, "buffered", int64(lines))
	return sdk.RawJSON(202, append(b, '}'))
}

// parseIncrement validates the body and coalesces it: distinct buffer
// keys in first-seen order, the sum of each key's deltas, and the number
// of lines.
func parseIncrement(body string) (keys []string, sums []int64, n int, bad *sdk.Response) {
	idx := map[string]int{}
	lines := proto.NewLines(body)
	for {
		s, no, ok := lines.Next()
		if !ok {
			break
		}
		if n == MaxPerIncrement {
			return nil, nil, 0, shardkit.Refuse(&proto.LineError{Line: no, Code: "too_many_deltas", Msg: "at most " + strconv.Itoa(MaxPerIncrement) + " deltas per call"})
		}
		d, le := counters.ParseDelta(s)
		if le != nil {
			le.Line = no
			return nil, nil, 0, shardkit.Refuse(le)
		}
		n++
		k := deltaPrefix + d.Key() // per counter and fence
		if j, seen := idx[k]; seen {
			if addOverflows(sums[j], d.N) {
				return nil, nil, 0, shardkit.Refuse(&proto.LineError{Line: no, Code: "delta_overflow", Msg: "deltas for " + strconv.Quote(d.Key()) + " overflow int64"})
			}
			sums[j] += d.N
			continue
		}
		idx[k] = len(keys)
		keys = append(keys, k)
		sums = append(sums, d.N)
	}
	if n == 0 {
		return nil, nil, 0, sdk.ErrorJSON(400, "empty_body", "no delta lines in the body")
	}
	return keys, sums, n, nil
}

func indexOf(keys []string, k string) int {
	for i := range keys {
		if keys[i] == k {
			return i
		}
	}
	return -1
}

// stepResult is what one flush step did.
type stepResult struct {
	sent     int   // deltas applied (or recognised as already applied)
	seq      int64 // last applied sequence
	frozen   int   // deltas frozen into a new inflight batch
	inflight bool  // an inflight batch remains (failed, or just frozen)
}

// step runs one round of the two-phase flush:
//
//	(a) an inflight batch frozen in an EARLIER event (so already durable
//	    when SQL runs: the host's output gate) is sent as one guarded SQL
//	    batch; on success it is deleted and its sequence recorded;
//	(b) if no inflight batch remains and deltas are buffered, they are
//	    frozen into a new inflight batch with the next sequence, their
//	    keys deleted, and the alarm set to now so a later event sends it.
//
// A failure logs E-VIBECODR-2141, keeps everything and retries by alarm
// after 1 s.
func step(shard string) (stepResult, error) {
	now := shardkit.NowMs()
	var r stepResult
	last, haveSeq, err := loadSeq()
	if err != nil {
		return r, err
	}
	r.seq = last
	v, ok, err := sdk.Storage().Get(inflightKey)
	if err != nil {
		return r, err
	}
	if ok {
		b, err := DecodeBatch(string(v))
		if err != nil {
			return r, err
		}
		applied, err := send(shard, &b, now)
		if err != nil {
			r.inflight = true
			shardkit.SetAlarm(now + RetryDelay.Milliseconds())
			return r, err
		}
		if _, err := sdk.Storage().Delete(inflightKey); err != nil {
			shardkit.Abort("delete inflight batch", err)
		}
		r.sent = len(b.Deltas)
		if b.Node == "" || b.Node == shardkit.NodeName() {
			r.seq, haveSeq = max(applied, b.Seq), true
			storeSeq(r.seq)
		} // else a batch another node froze (its copy of the shard was shipped here): its sequence is that node's
	}
	// (b) freeze.
	kvs, err := sdk.Storage().List(sdk.ListOptions{Prefix: deltaPrefix, Limit: freezeList})
	if err != nil {
		return r, err
	}
	if len(kvs) == 0 {
		return r, nil
	}
	if !haveSeq {
		// A shard without a local sequence (new, or its storage was lost)
		// resumes from the one SQL recorded, so its first batch is never
		// mistaken for a replay.
		t0 := time.Now()
		rs, err := sdk.SQL().Query(counters.SeqSQL, shardkit.NodeName(), shard)
		if err != nil {
			logFailed(shard, len(kvs), 0, t0, err)
			shardkit.SetAlarm(now + RetryDelay.Milliseconds())
			return r, err
		}
		if len(rs.Rows) > 0 {
			if n, ok := rs.Rows[0][0].(int64); ok {
				r.seq = n
			}
		}
		storeSeq(r.seq)
	}
	b := Batch{Seq: r.seq + 1, Node: shardkit.NodeName()}
	var frozen []string
	rows, size := 0, 16
	prevRow := ""
	for _, kv := range kvs {
		d, le := counters.ParseKeyed(strings.TrimPrefix(kv.Key, deltaPrefix), string(kv.Value))
		if le != nil {
			sdk.Error("dropping an unreadable buffered delta", "key", kv.Key, "error", le.Msg)
			frozen = append(frozen, kv.Key)
			continue
		}
		row := d.Table + "\t" + d.ID
		if row != prevRow {
			if rows == MaxBatchRows || size+len(kv.Key)+len(kv.Value)+proto.MaxIDBytes > MaxBatchBytes {
				break // a row's columns stay together in one batch
			}
			rows++
			prevRow = row
		}
		size += len(kv.Key) + len(kv.Value) + 2
		b.Deltas = append(b.Deltas, d)
		frozen = append(frozen, kv.Key)
	}
	for i := 0; i < len(frozen); i += abi.MaxMultiKeys {
		if _, err := sdk.Storage().DeleteMulti(frozen[i:min(i+abi.MaxMultiKeys, len(frozen))]); err != nil {
			shardkit.Abort("delete frozen deltas", err)
		}
	}
	if len(b.Deltas) > 0 {
		if err := sdk.Storage().Put(inflightKey, b.Encode()); err != nil {
			shardkit.Abort("store inflight batch", err)
		}
		r.frozen, r.inflight = len(b.Deltas), true
		shardkit.SetAlarm(now) // sent by the next event, once this one is durable
	}
	return r, nil
}

// send applies an inflight batch: one SQL transaction with a guarded
// clamped upsert per row (a delta of a counter with source rows in a
// statement of its own, guarded by its fence too), the guarded record of
// the sequence, and a read of the recorded sequence. It returns the
// sequence SQL holds afterwards. A batch whose sequence SQL already holds
// (a replay after a crash between the SQL commit and the shard's commit)
// changes nothing and counts as applied. The sequence is kept under the
// node the batch was frozen on (Batch.Node) and the shard's name.
func send(shard string, b *Batch, now int64) (int64, error) {
	t0 := time.Now()
	stmts := make([]sdk.Statement, 0, len(b.Deltas)+2)
	for i := 0; i < len(b.Deltas); {
		j := i + 1
		for j < len(b.Deltas) && b.Deltas[j].Table == b.Deltas[i].Table && b.Deltas[j].ID == b.Deltas[i].ID && !hasColumn(b.Deltas[i:j], b.Deltas[j].Column) &&
			!fenced(&b.Deltas[i]) && !fenced(&b.Deltas[j]) {
			j++
		}
		sql, args, err := counters.FlushUpsert(b.Deltas[i:j], b.Node, shard, b.Seq, now)
		if err != nil { // deltas of a batch were parsed from the whitelist
			logFailed(shard, len(b.Deltas), b.Seq, t0, err)
			return 0, err
		}
		stmts = append(stmts, sdk.Statement{SQL: sql, Args: args})
		i = j
	}
	stmts = append(stmts,
		sdk.Statement{SQL: counters.MarkSQL, Args: []any{b.Node, shard, b.Seq, now}},
		sdk.Statement{SQL: counters.SeqSQL, Args: []any{b.Node, shard}})
	rs, err := sdk.SQL().Batch(stmts)
	if err != nil {
		logFailed(shard, len(b.Deltas), b.Seq, t0, err)
		return 0, err
	}
	var sqlSeq int64
	if sel := rs[len(rs)-1]; len(sel.Rows) > 0 {
		sqlSeq, _ = sel.Rows[0][0].(int64)
	}
	replay := rs[len(rs)-2].RowsAffected == 0
	if replay && sqlSeq > b.Seq {
		// Only possible if another writer used this shard name or the
		// shard's storage went back in time: the batch may never have been
		// applied. Say so loudly; reconcileCounters repairs what has source rows.
		sdk.Error("counter flush sequence behind SQL; batch treated as applied", "shard", shard,
			"seq", strconv.FormatInt(b.Seq, 10), "sql_seq", strconv.FormatInt(sqlSeq, 10), "count", strconv.Itoa(len(b.Deltas)))
	}
	kv := []string{"code", CodeFlushOK, "shard", shard, "node", b.Node, "count", strconv.Itoa(len(b.Deltas)),
		"duration_ms", strconv.FormatInt(time.Since(t0).Milliseconds(), 10), "seq", strconv.FormatInt(b.Seq, 10)}
	msg := "counter deltas flushed"
	if replay {
		msg = "counter flush was already applied; replay changed nothing"
		kv = append(kv, "replay", "true")
	}
	sdk.Info(msg, kv...)
	return sqlSeq, nil
}

// fenced reports whether d is a delta of a counter with source rows.
func fenced(d *counters.Delta) bool {
	t := counters.LookupTable(d.Table)
	return t != nil && t.Fenced(d.Column)
}

func hasColumn(ds []counters.Delta, col string) bool {
	for i := range ds {
		if ds[i].Column == col {
			return true
		}
	}
	return false
}

func logFailed(shard string, count int, seq int64, t0 time.Time, err error) {
	sdk.Error("counter flush failed", "code", CodeFlushFailed, "shard", shard, "count", strconv.Itoa(count),
		"duration_ms", strconv.FormatInt(time.Since(t0).Milliseconds(), 10), "seq", strconv.FormatInt(seq, 10),
		"error", err.Error())
}

// loadSeq returns this node's last applied sequence as the shard keeps
// it. A sequence kept under another node (a copy of the shard shipped
// here from another host of a POP), or under none on a host with a node
// id (kept before sequences named their node), is not known to be this
// node's: none then, and the next freeze reads it from SQL.
func loadSeq() (int64, bool, error) {
	v, ok, err := sdk.Storage().Get(seqKey)
	if err != nil || !ok {
		return 0, false, err
	}
	num, node, _ := strings.Cut(string(v), "\t")
	n, good := proto.ParseInt(num)
	if !good {
		return 0, false, errors.New("malformed " + seqKey + ": " + string(v))
	}
	if node != shardkit.NodeName() {
		return 0, false, nil
	}
	return n, true, nil
}

// storeSeq keeps seq as this node's: "seq", and "\tnode" on a host with a
// node id.
func storeSeq(seq int64) {
	b := strconv.AppendInt(make([]byte, 0, 24), seq, 10)
	if node := shardkit.NodeName(); node != "" {
		b = append(append(b, '\t'), node...)
	}
	if err := sdk.Storage().Put(seqKey, b); err != nil {
		shardkit.Abort("store sequence", err)
	}
}

// alarm runs one flush step. Failures have already set the retry alarm,
// so the handler reports success to the host.
func alarm(sdk.AlarmInfo) error {
	shard, err := shardName(nil)
	if err != nil {
		return err
	}
	if _, err := step(shard); err != nil {
		if _, ok, gerr := sdk.GetAlarm(); gerr == nil && ok {
			return nil // step scheduled its own retry
		}
		return err
	}
	return nil
}

// flushNow answers POST /flush: one flush step now (send the inflight
// batch, freeze the buffer; the alarm sends what was frozen).
func flushNow(req *sdk.Request) *sdk.Response {
	shard, err := shardName(req)
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	r, err := step(shard)
	if err != nil {
		return sdk.ErrorJSON(503, "flush_failed", err.Error())
	}
	n, err := countPrefix(deltaPrefix)
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	b := append(make([]byte, 0, 96), `{"ok":true`...)
	b = sdk.AppendJSONInt(b, "flushed", int64(r.sent))
	b = sdk.AppendJSONInt(b, "seq", r.seq)
	b = sdk.AppendJSONInt(b, "inflight", int64(r.frozen))
	b = sdk.AppendJSONInt(b, "buffered", int64(n))
	return sdk.RawJSON(200, append(b, '}'))
}

// pending answers GET /pending: buffered keys, deltas in the inflight
// batch, last applied sequence.
func pending(*sdk.Request) *sdk.Response {
	n, err := countPrefix(deltaPrefix)
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	inflight := 0
	v, ok, err := sdk.Storage().Get(inflightKey)
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	if ok {
		b, err := DecodeBatch(string(v))
		if err != nil {
			return shardkit.Internal("bad_state", err)
		}
		inflight = len(b.Deltas)
	}
	seq, _, err := loadSeq()
	if err != nil {
		return shardkit.Internal("bad_state", err)
	}
	b := append(make([]byte, 0, 64), '{')
	b = sdk.AppendJSONInt(b, "buffered", int64(n))
	b = sdk.AppendJSONInt(b, "inflight", int64(inflight))
	b = sdk.AppendJSONInt(b, "seq", seq)
	return sdk.RawJSON(200, append(b, '}'))
}

// countPrefix counts the keys with prefix, a page at a time.
func countPrefix(prefix string) (int, error) {
	opts := sdk.ListOptions{Prefix: prefix, Limit: 1000}
	n := 0
	for {
		kvs, err := sdk.Storage().List(opts)
		if err != nil {
			return n, err
		}
		n += len(kvs)
		if len(kvs) < int(opts.Limit) {
			return n, nil
		}
		opts.StartAfter, opts.HasStartAfter = kvs[len(kvs)-1].Key, true
	}
}
