package host

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/rs/zerolog"
)

// Run-time tracing and the log tap.
//
// Config.TraceShard (serve --trace) selects shards to trace when the host
// starts; SetTrace switches one shard on or off while it runs. An actor
// asks once per event (wasm.Tracer.Tracing), through shardEnv, so a switch
// takes effect at the shard's next event and costs nothing while no shard
// has one (an atomic load).
//
// The log tap keeps, per shard, the last lines its guest logged and, while
// it is traced, its host calls: a ring bounded in bytes, for at most
// tapShards shards at a time (the least recently written is dropped for a
// new one). Lines are those the host log receives as well, at the host
// log's level.

// MaxTracedShards bounds the shards SetTrace may switch on at once: a
// traced shard logs every host call it makes.
const MaxTracedShards = 64

// ErrTooManyTraced is returned by SetTrace past MaxTracedShards.
var ErrTooManyTraced = errors.New("too many shards traced")

// SetTrace switches host-call tracing (as --trace does) on or off for one
// shard while the host runs, overriding Config.TraceShard for it; it takes
// effect at the shard's next event. The shard need not be active.
func (ns *Namespace) SetTrace(shard string, on bool) error {
	if err := ns.checkShard(shard); err != nil {
		return err
	}
	id := ns.shardID(shard)
	static := traced(ns.h.cfg.TraceShard, ns.name, shard)
	in := &ns.h.insp
	in.traceMu.Lock()
	defer in.traceMu.Unlock()
	if on == static {
		delete(in.traces, id) // back to what the config says
	} else {
		if on && !in.traces[id] {
			n := 0
			for _, v := range in.traces {
				if v {
					n++
				}
			}
			if n >= MaxTracedShards {
				return fmt.Errorf("%w: %d shards are traced already (at most %d); switch one off first", ErrTooManyTraced, n, MaxTracedShards)
			}
		}
		if in.traces == nil {
			in.traces = map[storage.ShardID]bool{}
		}
		in.traces[id] = on
	}
	in.nTraces.Store(int32(len(in.traces)))
	return nil
}

// SetTrace is Namespace.SetTrace for the shard of binding.
func (h *Host) SetTrace(binding, shard string, on bool) error {
	ns, ok := h.namespace(binding)
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownBinding, binding)
	}
	return ns.SetTrace(shard, on)
}

// Tracing reports whether the shard's host calls are traced.
func (ns *Namespace) Tracing(shard string) bool {
	return ns.h.insp.tracing(ns.shardID(shard), traced(ns.h.cfg.TraceShard, ns.name, shard))
}

// tracing is the shard's trace switch: a run-time override, else static
// (what Config.TraceShard says for it).
func (in *inspection) tracing(id storage.ShardID, static bool) bool {
	if in.nTraces.Load() == 0 {
		return static
	}
	in.traceMu.RLock()
	on, ok := in.traces[id]
	in.traceMu.RUnlock()
	if ok {
		return on
	}
	return static
}

// checkShard refuses a shard name the namespace cannot have.
func (ns *Namespace) checkShard(shard string) error {
	if n := ns.binding.Shards; n > 0 {
		if i, err := strconv.Atoi(shard); err != nil || i < 0 || i >= n || strconv.Itoa(i) != shard {
			return fmt.Errorf("%w: binding %q has shards 0..%d, not %q", ErrBadKey, ns.name, n-1, shard)
		}
		return nil
	}
	_, err := ns.ShardFor(shard)
	return err
}

// env is the guest environment of the actor's next fetch or alarm: the
// actor itself, seen through shardEnv. It records the event's start.
func (a *actor) env() wasm.Env {
	a.lastEvent.Store(a.ns.h.cfg.Clock.Now().UnixMilli())
	return shardEnv{a}
}

// shardEnv is the actor as its guest's environment, with the inspector's
// additions: the run-time trace switch, and the log tap of guest log
// records and traced host calls. Being one pointer, it converts to an
// interface without allocating.
type shardEnv struct{ *actor }

func (e shardEnv) Tracing() bool { return e.ns.h.insp.tracing(e.id, e.trace) }

func (e shardEnv) TraceHostCall(hc wasm.HostCall) {
	e.actor.TraceHostCall(hc)
	if !enabled(e.log, zerolog.InfoLevel) {
		return
	}
	fields := []abi.Header{{Name: "fn", Value: hc.Fn}, {Name: "result", Value: strconv.FormatInt(hc.Result, 10)}}
	if hc.Result < 0 && hc.Result > -100 {
		fields = append(fields, abi.Header{Name: "errno", Value: abi.Errno(-hc.Result).Error()})
	}
	if hc.Err != "" {
		fields = append(fields, abi.Header{Name: "error", Value: hc.Err})
	}
	e.ns.h.insp.tap.add(e.id, LogLine{Level: "info", Source: "trace", Message: hc.String(), Fields: fields})
}

func (e shardEnv) Log(level int32, rec abi.LogRecord) {
	e.actor.Log(level, rec)
	lvl, zl := "info", zerolog.InfoLevel
	switch level {
	case abi.LogDebug:
		lvl, zl = "debug", zerolog.DebugLevel
	case abi.LogWarn:
		lvl, zl = "warn", zerolog.WarnLevel
	case abi.LogError:
		lvl, zl = "error", zerolog.ErrorLevel
	}
	if enabled(e.glog, zl) {
		e.ns.h.insp.tap.add(e.id, LogLine{Level: lvl, Source: "guest", Message: rec.Message, Fields: rec.Fields})
	}
}

// enabled reports whether l writes lines of level lvl.
func enabled(l zerolog.Logger, lvl zerolog.Level) bool {
	return lvl >= l.GetLevel() && lvl >= zerolog.GlobalLevel()
}

// LogLine is one line of a shard's log tap.
type LogLine struct {
	// Seq orders lines host-wide; ShardLog returns those after a Seq.
	Seq     uint64
	Time    time.Time
	Level   string // "debug", "info", "warn" or "error"
	Source  string // "guest" (the plugin's own log) or "trace" (a host call)
	Message string
	Fields  []abi.Header
}

// ShardLog returns the shard's tapped log lines with a Seq after after,
// oldest first (at most what its ring holds), and the Seq to ask after
// next time (after itself when there is nothing new).
func (ns *Namespace) ShardLog(shard string, after uint64) ([]LogLine, uint64) {
	return ns.h.insp.tap.since(ns.shardID(shard), after)
}

// Bounds of the log tap.
const (
	tapShards     = 256      // shards with a ring at once
	tapRingBytes  = 64 << 10 // per ring
	tapFieldBytes = 512      // a field's value, or a message, is cut beyond
	tapFields     = 32       // fields kept per line
)

type logTap struct {
	mu    sync.Mutex
	rings map[storage.ShardID]*tapRing
	seq   uint64
}

type tapRing struct {
	lines []LogLine // oldest first
	bytes int
}

// add appends a copy of l, cut to the tap's bounds, to the shard's ring.
func (t *logTap) add(id storage.ShardID, l LogLine) {
	l.Time = time.Now()
	l.Message = cut(l.Message, 2*tapFieldBytes)
	size := len(l.Message) + 64
	fields := make([]abi.Header, 0, min(len(l.Fields), tapFields))
	for _, f := range l.Fields[:min(len(l.Fields), tapFields)] {
		f = abi.Header{Name: cut(f.Name, 64), Value: cut(f.Value, tapFieldBytes)}
		size += len(f.Name) + len(f.Value)
		fields = append(fields, f)
	}
	l.Fields = fields

	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rings[id]
	if r == nil {
		if t.rings == nil {
			t.rings = map[storage.ShardID]*tapRing{}
		}
		if len(t.rings) >= tapShards {
			t.dropStalest()
		}
		r = &tapRing{}
		t.rings[id] = r
	}
	t.seq++
	l.Seq = t.seq
	r.lines = append(r.lines, l)
	r.bytes += size
	for r.bytes > tapRingBytes && len(r.lines) > 1 {
		r.bytes -= lineSize(r.lines[0])
		r.lines[0] = LogLine{}
		r.lines = r.lines[1:]
	}
}

// dropStalest drops the ring written longest ago. Called with t.mu.
func (t *logTap) dropStalest() {
	var (
		stalest storage.ShardID
		seq     uint64
		found   bool
	)
	for id, r := range t.rings {
		if last := r.lines[len(r.lines)-1].Seq; !found || last < seq {
			stalest, seq, found = id, last, true
		}
	}
	delete(t.rings, stalest)
}

func (t *logTap) since(id storage.ShardID, after uint64) ([]LogLine, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rings[id]
	if r == nil {
		return nil, after
	}
	i, _ := slices.BinarySearchFunc(r.lines, after+1, func(l LogLine, seq uint64) int { return cmp.Compare(l.Seq, seq) })
	out := slices.Clone(r.lines[i:])
	if len(out) == 0 {
		return nil, after
	}
	return out, out[len(out)-1].Seq
}

func lineSize(l LogLine) int {
	n := len(l.Message) + 64
	for _, f := range l.Fields {
		n += len(f.Name) + len(f.Value)
	}
	return n
}

// cut shortens s to at most n bytes, on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

var (
	_ wasm.Env    = shardEnv{}
	_ wasm.Tracer = shardEnv{}
)
