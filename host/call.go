package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/internal/httpx"
)

// Shard-to-shard calls (shard_call): a shard whose binding names others in
// Binding.Calls sends a request to the shard a key routes to in one of
// them and waits for its answer, within its own event. Waiting is what can
// deadlock — each shard runs one event at a time, so A waiting on B while
// B waits on A never ends — and so every call carries its chain, the
// shards waiting on it, and the host keeps which of its shards waits on
// which: a call that would close a cycle fails at once with
// ErrnoDeadlock instead of hanging until the deadline.

// Call is one shard's request to another shard, made during one of the
// caller's events.
type Call struct {
	// Chain names ("binding/shard") the shards whose events wait on this
	// call, the first caller first, the caller last.
	Chain []string
	// Binding and Key address the called shard as /do/{Binding}/{Key}/...
	// does.
	Binding, Key string
	// Deadline is the calling event's: the called event ends by then.
	Deadline time.Time
	Request  *abi.Request
}

// Caller returns the "binding/shard" name of the calling shard.
func (c *Call) Caller() string {
	if len(c.Chain) == 0 {
		return ""
	}
	return c.Chain[len(c.Chain)-1]
}

// CallRouter delivers shard-to-shard calls. The host's own delivers them
// to its shards (Host.DeliverCall); Config.Calls may put another in front,
// one that forwards a call for a shard owned by another host. A forwarder
// carries Chain and Deadline with the call, and the owner hands it to its
// Host.DeliverCall, so deadlocks across hosts are caught as well. (On a
// host with a Placement the host forwards calls itself: Placement.Forward
// gets the chain in its context, CallChain, and the owner's FetchShard
// takes it back, WithCallChain.)
type CallRouter interface {
	RouteCall(ctx context.Context, c *Call) (*abi.Response, error)
}

// Errors of a call a caller branches on. ErrDeadlock: the called shard is
// in the call's chain, or (on this host) waits, directly or through
// others, on the caller. ErrCallDepth: the chain is abi.MaxCallDepth
// shards long already.
var (
	ErrDeadlock  = errors.New("call would deadlock")
	ErrCallDepth = errors.New("call chain too deep")
)

// CallerHeader is set on every request a shard receives from another
// shard to the caller's "binding/shard", and removed from every other
// request (a client cannot pass for a shard).
const CallerHeader = "X-Edgeshard-Caller"

// RouteCall implements CallRouter: the host delivers to its own shards.
func (h *Host) RouteCall(ctx context.Context, c *Call) (*abi.Response, error) {
	return h.DeliverCall(ctx, c)
}

// DeliverCall delivers a call to the shard of this host that c.Key routes
// to in c.Binding and returns its answer once the event's writes are
// durable, as Fetch does. It refuses a call whose chain already holds the
// called shard or is abi.MaxCallDepth long, or that would make the caller
// wait on a shard of this host that waits on it.
func (h *Host) DeliverCall(ctx context.Context, c *Call) (*abi.Response, error) {
	ns, ok := h.namespace(c.Binding)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownBinding, c.Binding)
	}
	shard, err := ns.ShardFor(c.Key)
	if err != nil {
		return nil, err
	}
	return ns.deliverCall(ctx, shard, c)
}

// deliverCall is DeliverCall to the shard of ns that c addresses.
func (ns *Namespace) deliverCall(ctx context.Context, shard string, c *Call) (*abi.Response, error) {
	h := ns.h
	target := ns.shardID(shard).String()
	if slices.Contains(c.Chain, target) {
		return nil, fmt.Errorf("%w: %s → %s: %s is waiting for this call", ErrDeadlock, strings.Join(c.Chain, " → "), target, target)
	}
	if len(c.Chain)+1 > abi.MaxCallDepth {
		return nil, fmt.Errorf("%w: %s → %s would be %d shards, at most %d", ErrCallDepth, strings.Join(c.Chain, " → "), target, len(c.Chain)+1, abi.MaxCallDepth)
	}
	if caller := c.Caller(); caller != "" {
		done, err := h.waits.wait(caller, target)
		if err != nil {
			return nil, err
		}
		defer done()
	}
	if !c.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, c.Deadline)
		defer cancel()
	}
	newEvent := func() *event {
		return &event{kind: evFetch, req: c.Request, chain: c.Chain, deadline: c.Deadline, done: make(chan result, 1)}
	}
	if h.cfg.Placement != nil {
		// Here under a claim, or forwarded to the shard's owner with its
		// chain (tryPlaced), the deadline bounding ctx.
		r, err := ns.fetchPlaced(ctx, shard, newEvent, true)
		return r.resp, err
	}
	r, err := ns.fetchEvent(ctx, shard, newEvent(), nil)
	return r.resp, err
}

type callChainKey struct{}

// WithCallChain marks ctx for a shard_call's request that another host
// forwarded to this one, the shard's owner: chain names the shards waiting
// on it ("binding/shard", the first caller first). Namespace.FetchShard
// then delivers it as the call it is: refused as a deadlock if the chain
// holds the called shard, the called shard seeing its caller.
func WithCallChain(ctx context.Context, chain []string) context.Context {
	return context.WithValue(ctx, callChainKey{}, slices.Clip(chain))
}

// CallChain returns the chain of a call that ctx carries to
// Placement.Forward (nil for a request that is not a call).
func CallChain(ctx context.Context) []string {
	c, _ := ctx.Value(callChainKey{}).([]string)
	return c
}

// waitGraph is which shard of this host waits on which through a call in
// progress: each waiting shard runs one event, blocked in one call.
type waitGraph struct {
	mu    sync.Mutex
	waits map[string]string
}

// wait records that caller waits on target, unless target already waits,
// directly or through others, on caller: that call would never end
// (ErrDeadlock). done removes the record.
func (g *waitGraph) wait(caller, target string) (done func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waits == nil {
		g.waits = map[string]string{}
	}
	path := []string{caller, target}
	for t, n := target, 0; n <= len(g.waits); n++ {
		if t == caller {
			return nil, fmt.Errorf("%w: %s waits on %s", ErrDeadlock, target, strings.Join(path[2:], " → "))
		}
		next, ok := g.waits[t]
		if !ok {
			break
		}
		path = append(path, next)
		t = next
	}
	g.waits[caller] = target
	return func() {
		g.mu.Lock()
		delete(g.waits, caller)
		g.mu.Unlock()
	}, nil
}

// CallShard implements wasm.Env: the shard sends a request to a shard of a
// binding its own names in Calls, through the host's call router. A
// failure of the called shard (a trap, a timeout, a full queue) comes back
// as the response /do would answer; errnos are for the call itself.
func (a *actor) CallShard(ctx context.Context, c *abi.CallRequest) (*abi.Response, error) {
	resp, failed, err := a.callShard(ctx, c)
	o := outcome(err)
	if failed {
		o = "failed"
	}
	a.ns.h.outm.calls.WithLabelValues(a.ns.name, o).Inc()
	return resp, err
}

// callShard is CallShard; failed reports a response standing for the
// called shard's failure.
func (a *actor) callShard(ctx context.Context, c *abi.CallRequest) (resp *abi.Response, failed bool, err error) {
	if !slices.Contains(a.ns.binding.Calls, c.Binding) {
		return nil, false, fmt.Errorf("%w: binding %s may not call %q (its calls list: %s)", wasm.ErrNotGranted, a.ns.name, c.Binding, strings.Join(a.ns.binding.Calls, ", "))
	}
	call := &Call{Chain: append(slices.Clip(a.callChain), a.id.String()), Binding: c.Binding, Key: c.Key, Request: &c.Request}
	call.Deadline, _ = ctx.Deadline()
	resp, err = a.ns.h.calls.RouteCall(ctx, call)
	switch {
	case err == nil:
		return resp, false, nil
	case errors.Is(err, ErrDeadlock):
		return nil, false, &wasm.CallError{Errno: abi.ErrnoDeadlock, Err: err}
	case errors.Is(err, ErrCallDepth):
		return nil, false, &wasm.CallError{Errno: abi.ErrnoLimit, Err: err}
	case errors.Is(err, ErrBadKey), errors.Is(err, ErrUnknownBinding):
		return nil, false, &wasm.CallError{Errno: abi.ErrnoInvalid, Err: err}
	case ctx.Err() != nil:
		// The called shard's details (a trap's stack) stay in the log, as
		// for /do.
		msg := fmt.Sprintf("the calling event's deadline passed waiting for %s/%s", c.Binding, c.Key)
		if errors.Is(err, ErrTimeout) {
			msg += "; the called shard was stopped at that deadline"
		}
		return nil, false, &wasm.CallError{Errno: abi.ErrnoDeadline, Err: errors.New(msg)}
	}
	return a.failedCall(c, err), true, nil
}

// failedCall is the response /do would answer for a failed Fetch: the
// error envelope, with a 5xx's details kept in the log under a request id.
func (a *actor) failedCall(c *abi.CallRequest, err error) *abi.Response {
	status, code := ErrorStatus(err)
	msg := err.Error()
	if !clientVisible(status, code) {
		id := httpx.NewRequestID()
		msg = publicMessage(code) + " (request id " + id + "; details are in the host log)"
		a.log.Warn().Err(err).Str("request_id", id).Str("to_binding", c.Binding).Str("to_key", c.Key).Int("status", status).Str("code", code).Msg("shard_call failed")
	}
	body, _ := json.Marshal(httpx.ErrorBody{Error: httpx.ErrorDetail{Code: code, Message: msg}})
	return &abi.Response{Status: status, Header: []abi.Header{{Name: "Content-Type", Value: "application/json"}}, Body: body}
}
