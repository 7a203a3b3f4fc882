package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/rs/zerolog"
)

// The guest's environment: the actor's side of the host functions
// (wasm.Env), reached only from the actor's goroutine during one of its
// events, and where the guest's own output goes.

// Store is the shard's storage with the quota enforced (quota.go).
func (a *actor) Store() wasm.Store { return &a.guest().store }

// BeginEvent implements wasm.Limiter: it starts an event's budgets and
// returns its limits.
func (a *actor) BeginEvent(alarm bool) *wasm.EventLimits {
	g := a.guest()
	g.inAlarm = alarm
	g.store.beginEvent()
	return &g.ev
}

// LimitReached implements wasm.Limiter.
func (a *actor) LimitReached(limit, detail string) { a.limitReached(limit, detail) }

// limitReached logs (once per event and limit, the caller sees to it) and
// counts a guest call refused by a limit.
func (a *actor) limitReached(limit, detail string) {
	a.ns.metrics.limitHit(limit)
	a.log.Warn().Str("limit", limit).Str("detail", detail).Msg("plugin reached a host limit; the call was refused")
}

// SetAlarm sets the shard's alarm. One that an alarm handler sets sooner
// than one AlarmRearmInterval ahead is paced (guestState.paceRearm).
func (a *actor) SetAlarm(ms int64) error {
	if g := a.guest(); g.inAlarm {
		now := a.ns.h.cfg.Clock.Now().UnixMilli()
		at, deferred := g.paceRearm(now, ms)
		switch {
		case deferred && !g.pacing:
			g.pacing = true
			a.ns.metrics.limitHit(limitRearm)
			a.log.Warn().Str("limit", limitRearm).Int64("requested_ms", ms).Int64("at_ms", at).
				Dur("interval", g.lim.AlarmRearmInterval).Int("burst", g.lim.AlarmRearmBurst).
				Msg("alarm handler re-arms its alarm faster than the host allows; moved later")
		case deferred:
			a.ns.metrics.limitHit(limitRearm)
		default:
			g.pacing = false
		}
		ms = at
	}
	if err := a.store.SetAlarm(ms); err != nil {
		return err
	}
	a.alarmSet, a.alarmAt, a.alarmDeleted = true, ms, false
	return nil
}

func (a *actor) GetAlarm() (int64, bool, error) { return a.store.GetAlarm() }

func (a *actor) DeleteAlarm() error {
	if err := a.store.DeleteAlarm(); err != nil {
		return err
	}
	a.alarmSet, a.alarmDeleted = false, true
	return nil
}

// VarShardName is a reserved var that always answers the asking shard's
// "<binding>/<shard>" (in fetch and alarm events alike).
const VarShardName = "edgeshard.shard"

// VarSQLDialect is a reserved var that answers the dialect of the SQL
// database bound to the asking shard's namespace, "sqlite" or "postgres"
// (unset without a SQL binding, or when the binding does not say).
const VarSQLDialect = "edgeshard.sql_dialect"

// VarNodeID is a reserved var that answers the host's node id
// (Config.NodeID), unset when the host has none: what a shard keys by,
// beside its own name, whatever must be unique per writer of a SQL
// database several hosts share.
const VarNodeID = "edgeshard.node"

func (a *actor) Var(name string) (string, bool) {
	switch name {
	case VarShardName:
		return a.id.String(), true
	case VarNodeID:
		n := a.ns.h.cfg.NodeID
		return n, n != ""
	case VarSQLDialect:
		if a.ns.shardSQL {
			return "sqlite", true
		}
		if d, ok := a.ns.sql.(interface{ Dialect() string }); ok {
			return d.Dialect(), true
		}
		return "", false
	}
	v, ok := a.ns.h.cfg.Vars[name]
	return v, ok
}

// Log writes a guest's record to the host log, marked as the guest's: the
// host sets component=guest, binding and shard, and a guest field that
// would pass for one of the host's is renamed with the prefix "guest_"
// (level, time, message, component, binding, any guest_* name, a shard
// other than the calling shard's). A code field is honoured — logged as
// code and counted in edgeshard_guest_log_codes_total — only when the
// binding's LogCodes allow it; otherwise it is logged as guest_code and
// counted as code "unlisted". So a plugin cannot forge the host's log
// lines, another binding's codes, or the metrics alerts watch.
func (a *actor) Log(level int32, rec abi.LogRecord) {
	g := a.guest()
	var code, dur string
	listed, unlisted := false, false
	for _, f := range rec.Fields {
		switch f.Name {
		case "code":
			switch {
			case !g.codes.allows(f.Value):
				unlisted = true
			case !listed:
				code, listed = f.Value, true
			}
		case "duration_ms":
			dur = f.Value
		}
	}
	if listed {
		a.ns.metrics.guestCode(code, dur)
	}
	if unlisted {
		a.ns.metrics.guestCode(unlistedCode, "")
	}
	var ev *zerolog.Event
	switch level {
	case abi.LogDebug:
		ev = a.glog.Debug()
	case abi.LogWarn:
		ev = a.glog.Warn()
	case abi.LogError:
		ev = a.glog.Error()
	default:
		ev = a.glog.Info()
	}
	if ev == nil {
		return
	}
	ev = ev.Str("component", "guest")
	codeSet, shardSet := false, false
	for _, f := range rec.Fields {
		name := f.Name
		switch {
		case name == "code":
			if codeSet || !g.codes.allows(f.Value) {
				name = "guest_code"
			}
			codeSet = codeSet || name == "code"
		case name == "shard":
			if shardSet || (f.Value != a.shard && f.Value != a.id.String()) {
				name = "guest_shard"
			}
			shardSet = shardSet || name == "shard"
		case hostLogField(name):
			name = "guest_" + name
		}
		ev = ev.Str(name, f.Value)
	}
	if !shardSet {
		ev = ev.Str("shard", a.shard)
	}
	ev.Msg(rec.Message)
}

// unlistedCode is the code label counting guest codes a binding does not
// honour.
const unlistedCode = "unlisted"

// hostLogField reports whether a guest field name would pass for one the
// host writes on a guest's line.
func hostLogField(name string) bool {
	switch name {
	case zerolog.LevelFieldName, zerolog.TimestampFieldName, zerolog.MessageFieldName, "component", "binding":
		return true
	}
	return strings.HasPrefix(name, "guest_")
}

func (a *actor) SQL(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	if a.ns.shardSQL {
		res, err := a.shardSQL(ctx, stmts)
		return res, injected(err)
	}
	if a.ns.sql == nil {
		return nil, fmt.Errorf("%w: no sql database is bound to %s", wasm.ErrNotGranted, a.ns.name)
	}
	// Output gate for side effects: SQL leaves the shard only after every
	// write of earlier events is durable, so a flush never reaches SQL
	// ahead of the storage state it was computed from.
	if a.last != nil {
		if err := a.last.Wait(ctx); err != nil {
			return nil, fmt.Errorf("earlier storage commit failed: %w", err)
		}
		a.last = nil
	}
	if a.claim != nil && !a.claim.Valid() {
		a.ns.metrics.m.fenceRefusals.WithLabelValues("claim").Inc()
		return nil, ErrFenced // the shard's ownership lapsed during the event
	}
	if a.claim != nil {
		if f, ok := a.ns.sql.(FencedSQLDB); ok {
			// Single-writer per shard in a shared database: the batch
			// carries the claim's epoch and is refused if a newer owner
			// of the shard has written (placement.go).
			res, err := f.BatchFenced(ctx, a.ns.name, a.claim.Fence(), a.claim.Epoch(), stmts)
			if errors.Is(err, ErrFenced) {
				a.ns.metrics.m.fenceRefusals.WithLabelValues("sql").Inc()
				a.log.Warn().Int64("epoch", a.claim.Epoch()).Msg("sql write refused: a newer owner of the shard has written")
			}
			return res, injected(err)
		}
	}
	res, err := a.ns.sql.Batch(ctx, stmts)
	return res, injected(err)
}

func (a *actor) WriteDataPoint(p abi.DataPoint) error {
	if a.ns.analytics.Sink == nil {
		return fmt.Errorf("%w: no analytics dataset is bound to %s", wasm.ErrNotGranted, a.ns.name)
	}
	return injected(a.ns.analytics.Sink.Write(a.ns.analytics.Dataset, p))
}

// injected marks a binding's hostinternal.ErrInjectedCrash for the host
// function, which then traps the guest instead of returning an errno.
func injected(err error) error {
	if err != nil && errors.Is(err, hostinternal.ErrInjectedCrash) {
		return fmt.Errorf("%w: %w", wasm.ErrCrash, err)
	}
	return err
}

// traced reports whether spec ("binding/shard", "binding/*" or "*")
// selects the shard for host-call tracing.
func traced(spec, binding, shard string) bool {
	switch spec {
	case "":
		return false
	case "*", binding + "/*", binding + "/" + shard:
		return true
	}
	return false
}

// Tracing and TraceHostCall implement wasm.Tracer.
func (a *actor) Tracing() bool { return a.trace }

// TraceHostCall logs one host call of a traced shard, decoded:
// `storage_get key="user:alice" → 42 bytes "…"`.
func (a *actor) TraceHostCall(hc wasm.HostCall) {
	ev := a.log.Info().Str("component", "trace").Str("fn", hc.Fn).Int64("result", hc.Result)
	if hc.Result < 0 && hc.Result > -100 {
		ev = ev.Str("errno", abi.Errno(-hc.Result).Error())
	}
	ev.Msg(hc.String())
}

// guestOutput keeps the tail of what a guest wrote to stdout/stderr, so a
// crash report can include the panic message and stack.
type guestOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const guestOutputTail = 16 << 10

func (g *guestOutput) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf.Write(p)
	if g.buf.Len() > 2*guestOutputTail {
		tail := append([]byte(nil), g.buf.Bytes()[g.buf.Len()-guestOutputTail:]...)
		g.buf.Reset()
		g.buf.Write(tail)
	}
	return len(p), nil
}

func (g *guestOutput) take() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.buf.String()
	g.buf.Reset()
	if len(s) > guestOutputTail {
		s = s[len(s)-guestOutputTail:]
	}
	return strings.TrimSpace(s)
}

var (
	_ wasm.Env     = (*actor)(nil)
	_ wasm.Tracer  = (*actor)(nil)
	_ wasm.Limiter = (*actor)(nil)
)
