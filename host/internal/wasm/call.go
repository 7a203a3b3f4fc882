package wasm

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/shardenv"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/tetratelabs/wazero/api"
)

// Store is the shard storage the storage and alarm host functions use.
type Store = shardenv.Store

// Env is what one event of one shard may reach through host functions. A
// nil Store, or an error wrapping ErrNotGranted, answers ErrnoNotGranted.
type Env = shardenv.Env

// Tracer is implemented by an Env that wants every host call reported
// (edgeshard serve --trace), decoded (HostCall). Tracing reports whether it
// is on; it is asked once per event.
type Tracer interface {
	Tracing() bool
	TraceHostCall(hc HostCall)
}

// EventLimits bound what one event may make the host do through host
// functions. A field ≤ 0 sets no limit. A call that would pass a limit
// answers -ErrnoLimit and changes nothing; later events start afresh.
type EventLimits struct {
	// WriteBytes bounds the bytes of keys and values handed to storage
	// writes: every put and delete counts, an overwrite of the same key
	// included, so it bounds both the event's pending writes and what the
	// host copies for them.
	WriteBytes int64
	// WriteKeys bounds the keys written or deleted (each key of a
	// multi-key call; storage_delete_all counts one).
	WriteKeys int64
	// LogLines and LogBytes bound log_write records and their encoded bytes.
	LogLines int64
	LogBytes int64
}

// Limit names, as the host's settings call them; LimitReached reports them.
const (
	LimitWriteBytes = "event_write_bytes"
	LimitWriteKeys  = "event_write_keys"
	LimitLogLines   = "event_log_lines"
	LimitLogBytes   = "event_log_bytes"
)

// Limiter is implemented by an Env whose events are budgeted.
type Limiter interface {
	// BeginEvent is called as each event starts (alarm reports an alarm
	// event, else a fetch) and returns the event's limits, or nil.
	BeginEvent(alarm bool) *EventLimits
	// LimitReached reports the first call of an event refused by a limit:
	// the limit's name (LimitWriteBytes…) and the message the guest gets.
	LimitReached(limit, detail string)
}

// ErrNotGranted is returned by an Env for a binding its namespace lacks.
var ErrNotGranted = errors.New("binding not granted")

// ErrCrash, wrapped in an error an Env returns, makes the host function
// trap the guest instead of answering an errno (fault injection).
var ErrCrash = errors.New("injected crash")

// CallError lets an Env choose the errno for an error.
type CallError struct {
	Errno abi.Errno
	Err   error
}

func (e *CallError) Error() string { return e.Err.Error() }
func (e *CallError) Unwrap() error { return e.Err }

// call is the per-event state host functions reach through the context.
type call struct {
	env     Env
	pending []byte // a result too large for the guest's buffer
	errMsg  string // detail of the last failed call that had one, for error_message
	msgSet  bool   // errMsg was set by the call in progress (for its trace)
	crash   error  // set by errno for ErrCrash: trap the guest after the call
	ctx     context.Context
	tracer  Tracer // non-nil while tracing this event

	limiter Limiter      // the Env, when it budgets events
	lim     *EventLimits // this event's limits, nil for none
	used    EventLimits  // what this event has spent of them
	reached uint8        // limits already reported this event (limitBit)

	batch *batchCall // the edgeshard_fetch_batch call in progress (batch.go)
}

// limitBit gives each limit a bit of call.reached.
var limitBit = map[string]uint8{LimitWriteBytes: 1, LimitWriteKeys: 2, LimitLogLines: 4, LimitLogBytes: 8}

// begin starts the budget of an event: the Env's limits, nothing spent.
func (c *call) begin(alarm bool) {
	if c.limiter != nil {
		c.lim = c.limiter.BeginEvent(alarm)
	}
}

// overLimit answers -ErrnoLimit for limit with msg, reporting the first
// refusal of each limit per event to the Limiter.
func (c *call) overLimit(s []uint64, limit, msg string) {
	c.fail(s, abi.ErrnoLimit, msg)
	if bit := limitBit[limit]; c.reached&bit == 0 {
		c.reached |= bit
		c.limiter.LimitReached(limit, msg)
	}
}

// spendWrite charges a storage write of n bytes in keys keys to the
// event's budget, or answers -ErrnoLimit naming the limit it would pass
// (refundWrite undoes it when the write then fails).
func (c *call) spendWrite(s []uint64, fn string, n, keys int64) bool {
	l := c.lim
	if l == nil {
		return true
	}
	if l.WriteBytes > 0 && c.used.WriteBytes+n > l.WriteBytes {
		c.overLimit(s, LimitWriteBytes, fmt.Sprintf("%s of %d bytes refused: this event already wrote %d bytes; %s is %d",
			fn, n, c.used.WriteBytes, LimitWriteBytes, l.WriteBytes))
		return false
	}
	if l.WriteKeys > 0 && c.used.WriteKeys+keys > l.WriteKeys {
		c.overLimit(s, LimitWriteKeys, fmt.Sprintf("%s of %d keys refused: this event already wrote %d keys; %s is %d",
			fn, keys, c.used.WriteKeys, LimitWriteKeys, l.WriteKeys))
		return false
	}
	c.used.WriteBytes += n
	c.used.WriteKeys += keys
	return true
}

func (c *call) refundWrite(n, keys int64) {
	c.used.WriteBytes -= n
	c.used.WriteKeys -= keys
}

// spendLog charges one log record of n bytes, or answers -ErrnoLimit.
func (c *call) spendLog(s []uint64, n int64) bool {
	l := c.lim
	if l == nil {
		return true
	}
	if l.LogLines > 0 && c.used.LogLines+1 > l.LogLines {
		c.overLimit(s, LimitLogLines, fmt.Sprintf("log record dropped: this event already logged %d records; %s is %d",
			c.used.LogLines, LimitLogLines, l.LogLines))
		return false
	}
	if l.LogBytes > 0 && c.used.LogBytes+n > l.LogBytes {
		c.overLimit(s, LimitLogBytes, fmt.Sprintf("log record of %d bytes dropped: this event already logged %d bytes; %s is %d",
			n, c.used.LogBytes, LimitLogBytes, l.LogBytes))
		return false
	}
	c.used.LogLines++
	c.used.LogBytes += n
	return true
}

// setMsg records the detail of the failed call in progress.
func (c *call) setMsg(msg string) {
	c.errMsg, c.msgSet = msg, true
}

type callKey struct{}

// callCtx is the context of one call, reused by its instance from event
// to event: the caller's context, and the call state host functions
// find through Value. Reusing it saves two allocations per event.
type callCtx struct {
	context.Context
	c call
}

// reset prepares the context for an event of env under ctx. Only wazero
// and the host functions see the returned context, during the call; what
// may outlive the call (database/sql keeps the context of a query's rows
// in a goroutine) gets ctx itself, through call.ctx.
func (x *callCtx) reset(ctx context.Context, env Env) context.Context {
	x.Context = ctx
	x.c = call{env: env, ctx: ctx}
	if t, ok := env.(Tracer); ok && t.Tracing() {
		x.c.tracer = t
	}
	if l, ok := env.(Limiter); ok {
		x.c.limiter = l
	}
	return x
}

func (x *callCtx) Value(key any) any {
	if key == (callKey{}) {
		return &x.c
	}
	return x.Context.Value(key)
}

// callFrom returns the call state of ctx, or nil outside an event (during
// instantiation): host functions then answer "not granted".
func callFrom(ctx context.Context) *call {
	if x, ok := ctx.(*callCtx); ok {
		return &x.c
	}
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// errno maps an error to its errno and records its message.
func (c *call) errno(err error) abi.Errno {
	c.setMsg(err.Error())
	if errors.Is(err, ErrCrash) {
		c.crash = err
	}
	var ce *CallError
	switch {
	case errors.As(err, &ce):
		return ce.Errno
	case errors.Is(err, ErrNotGranted):
		return abi.ErrnoNotGranted
	case errors.Is(err, storage.ErrKeyTooLarge), errors.Is(err, storage.ErrValueTooLarge), errors.Is(err, storage.ErrTooManyKeys):
		return abi.ErrnoTooLarge
	case errors.Is(err, storage.ErrInvalid):
		return abi.ErrnoInvalid
	case errors.Is(err, context.DeadlineExceeded):
		return abi.ErrnoDeadline
	case errors.Is(err, context.Canceled):
		return abi.ErrnoCanceled
	}
	return abi.ErrnoIO
}

func neg(e abi.Errno) uint64 { return uint64(-int64(e)) }

func u32(v uint64) uint32 { return uint32(v) }

// arg returns the bytes of the (ptr, len) parameter pair s[i], s[i+1]: a
// view of guest memory, valid until the guest runs again. Outside memory
// it answers -ErrnoFault and returns false.
func arg(mod api.Module, s []uint64, i int) ([]byte, bool) {
	n := u32(s[i+1])
	if n == 0 {
		return nil, true
	}
	b, ok := mod.Memory().Read(u32(s[i]), n)
	if !ok {
		s[0] = neg(abi.ErrnoFault)
	}
	return b, ok
}

// boundedArg is arg for a parameter pair whose length the ABI bounds:
// a length over limit answers -ErrnoTooLarge ("<what> of n bytes exceeds
// limit") before anything is read.
func (c *call) boundedArg(mod api.Module, s []uint64, i int, limit uint32, what string) ([]byte, bool) {
	if n := u32(s[i+1]); n > limit {
		c.tooLarge(s, "%s of %d bytes exceeds %d", what, n, limit)
		return nil, false
	}
	return arg(mod, s, i)
}

// decodeArg reads the parameter pair s[i], s[i+1] (outside memory:
// -ErrnoFault), answers -ErrnoTooLarge past limit bytes ("<what> of n
// bytes exceeds limit") and decodes it, answering -ErrnoInvalid for what
// decode refuses. When it reports false it has answered the errno.
func decodeArg[T any](c *call, mod api.Module, s []uint64, i int, limit int, what string, decode func([]byte) (T, error)) (T, bool) {
	var v T
	raw, ok := arg(mod, s, i)
	if !ok {
		return v, false
	}
	if len(raw) > limit {
		c.tooLarge(s, "%s of %d bytes exceeds %d", what, len(raw), limit)
		return v, false
	}
	v, err := decode(raw)
	return v, !c.invalid(s, err)
}

// shortArg is arg for the hot functions var_get and log_write: past limit
// bytes it answers a bare -ErrnoTooLarge (no message to format).
func shortArg(mod api.Module, s []uint64, i int, limit int) ([]byte, bool) {
	b, ok := arg(mod, s, i)
	if ok && len(b) > limit {
		s[0] = neg(abi.ErrnoTooLarge)
		return nil, false
	}
	return b, ok
}

// fail answers -e, with msg for error_message.
func (c *call) fail(s []uint64, e abi.Errno, msg string) {
	c.setMsg(msg)
	s[0] = neg(e)
}

// tooLarge answers -ErrnoTooLarge with a message for error_message.
func (c *call) tooLarge(s []uint64, format string, args ...any) {
	c.fail(s, abi.ErrnoTooLarge, fmt.Sprintf(format, args...))
}

// invalid answers -ErrnoInvalid with err's message when err is set (an
// encoded argument the abi decoder refused), and reports whether it was.
func (c *call) invalid(s []uint64, err error) bool {
	if err == nil {
		return false
	}
	c.failWith(s, abi.ErrnoInvalid, err)
	return true
}

// failWith answers -e with err's message (kept out of line: invalid,
// on every decoding call's success path, stays inlined).
func (c *call) failWith(s []uint64, e abi.Errno, err error) {
	c.fail(s, e, err.Error())
}

// answer answers 0, or the errno of an Env's error.
func (c *call) answer(s []uint64, err error) {
	if err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = 0
}

// groupErrno is errno for a group whose own errno (ErrnoSQL,
// ErrnoAnalytics) stands for what would otherwise be ErrnoIO.
func (c *call) groupErrno(err error, io abi.Errno) abi.Errno {
	if e := c.errno(err); e != abi.ErrnoIO {
		return e
	}
	return io
}

// found answers the errno of err, or -ErrnoNotFound when !ok, and
// reports whether neither is the case: the caller has a value to answer.
func (c *call) found(s []uint64, ok bool, err error) bool {
	switch {
	case err != nil:
		s[0] = neg(c.errno(err))
	case !ok:
		s[0] = neg(abi.ErrnoNotFound)
	default:
		return true
	}
	return false
}

// reply writes a result for the "caller passes a buffer" convention: the
// bytes go into (buf, cap) when they fit, otherwise they are held for
// result_take. Either way the result is their length.
func (c *call) reply(mod api.Module, data []byte, buf, bufCap uint32) uint64 {
	c.pending = nil
	if uint32(len(data)) <= bufCap {
		if len(data) > 0 && !mod.Memory().Write(buf, data) {
			return neg(abi.ErrnoFault)
		}
		return uint64(len(data))
	}
	c.pending = append([]byte(nil), data...)
	return uint64(len(data))
}
