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

func (a *actor) Store() wasm.Store { return a.store }

func (a *actor) SetAlarm(ms int64) error {
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

func (a *actor) Var(name string) (string, bool) {
	switch name {
	case VarShardName:
		return a.id.String(), true
	case VarSQLDialect:
		if d, ok := a.ns.sql.(interface{ Dialect() string }); ok {
			return d.Dialect(), true
		}
		return "", false
	}
	v, ok := a.ns.h.cfg.Vars[name]
	return v, ok
}

func (a *actor) Log(level int32, rec abi.LogRecord) {
	var code, dur string
	for _, f := range rec.Fields {
		switch f.Name {
		case "code":
			code = f.Value
		case "duration_ms":
			dur = f.Value
		}
	}
	if code != "" {
		a.ns.metrics.guestCode(code, dur)
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
	ownShard := false
	for _, f := range rec.Fields {
		if f.Name == "binding" || f.Name == "component" {
			continue // the host's own fields win
		}
		ownShard = ownShard || f.Name == "shard"
		ev = ev.Str(f.Name, f.Value)
	}
	if !ownShard {
		ev = ev.Str("shard", a.shard)
	}
	ev.Msg(rec.Message)
}

func (a *actor) SQL(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
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

func (a *actor) TraceHostCall(fn string, params []uint64, result uint64, errMsg string) {
	ev := a.log.Info().Str("component", "trace").Str("fn", fn)
	args := make([]int64, len(params))
	for i, p := range params {
		args[i] = int64(p)
	}
	ev = ev.Ints64("args", args).Int64("result", int64(result))
	if r := int64(result); r < 0 && r > -100 {
		ev = ev.Str("errno", abi.Errno(-r).Error())
	}
	if errMsg != "" {
		ev = ev.Str("error", errMsg)
	}
	ev.Msg("host call")
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
	_ wasm.Env    = (*actor)(nil)
	_ wasm.Tracer = (*actor)(nil)
)
