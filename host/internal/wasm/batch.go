package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Batch delivery (abi/ABI.md, "Batch delivery"): a guest that exports
// edgeshard_fetch_batch receives several requests in one call and
// answers each with the host function fetch_respond, in order. Each
// request stays its own event: at every fetch_respond the host takes the
// response, ends that event (its caller commits its writes and replies)
// and starts the next one with a fresh deadline, budget and call state,
// so a batch gives the answers, ordering and durability of the same
// requests delivered one by one, minus a wasm call pair, a request
// allocation and a wake-up of the shard per request.

// BatchDone is called by FetchBatch, on the caller's goroutine and while
// the guest waits, once the guest has answered request k of the batch:
// the caller ends that event (commits its writes, sends its reply) and
// returns the context of request k+1 (unused after the last request).
// It must not cancel request k's context: the guest is still running
// under it until FetchBatch has moved on; cancel them after FetchBatch
// returns.
type BatchDone func(k int, resp *abi.Response) context.Context

// batchCall is the state of one edgeshard_fetch_batch call.
type batchCall struct {
	inst     *Instance
	n        int // requests in the batch
	answered int // requests answered so far
	done     BatchDone
	bad      error // the response fetch_respond refused (ErrBadResponse)
}

// CanBatch reports whether the instance's module exports
// edgeshard_fetch_batch.
func (i *Instance) CanBatch() bool { return i.fnBatch != nil }

// FetchBatch delivers reqs in one call of edgeshard_fetch_batch; ctx is
// the context of reqs[0], done is called as each request is answered and
// gives the context of the next. It returns how many requests were
// answered (done was called for each). A non-nil error is the fate of
// request n: the instance died while handling it (as Fetch's errors), and
// requests after it were not delivered. With a nil error and n <
// len(reqs) the guest returned early: the caller delivers the rest.
func (i *Instance) FetchBatch(ctx context.Context, env Env, reqs []*abi.Request, done BatchDone) (int, error) {
	if i.dead != nil {
		return 0, i.dead
	}
	if i.fnBatch == nil {
		return 0, errors.New("wasm: the module does not export " + abi.ExportFetchBatch)
	}
	buf := i.reqBuf[:0]
	for _, r := range reqs {
		at := len(buf)
		buf = abi.AppendRequest(append(buf, 0, 0, 0, 0), r)
		binary.LittleEndian.PutUint32(buf[at:], uint32(len(buf)-at-4))
	}
	i.reqBuf = buf
	i.batch = batchCall{inst: i, n: len(reqs), done: done}
	b := &i.batch
	defer func() { i.batch.done = nil }() // the caller's closure is not kept
	ctx = i.cctx.reset(ctx, env)
	i.cctx.c.batch = b
	i.cctx.c.begin(false)
	ptr, n, err := i.writeRequests(ctx)
	if err != nil {
		return 0, err
	}
	stack := [3]uint64{uint64(ptr), uint64(n), uint64(len(reqs))}
	if err := i.call(ctx, i.fnBatch, stack[:]); err != nil {
		if b.bad != nil {
			return b.answered, i.killWith(b.bad)
		}
		return b.answered, i.kill(err)
	}
	return b.answered, nil
}

// nextEvent starts the event of the batch's next request under ctx: the
// per-event call state (held result, error message, budgets) starts
// afresh and the interrupter watches ctx's deadline.
func (i *Instance) nextEvent(ctx context.Context) {
	x := &i.cctx
	b, env := x.c.batch, x.c.env
	x.reset(ctx, env)
	x.c.batch = b
	x.c.begin(false)
	i.intr.rearm(ctx)
}

// rearm moves the watch of the call in progress onto ctx (the next event
// of a batch). A flag already raised stays raised: the guest traps at its
// next check.
func (t *interrupter) rearm(ctx context.Context) {
	if t.flag == nil || ctx.Done() == nil {
		return
	}
	if t.timed {
		t.timer.Stop()
		t.timed = false
	}
	if t.stop != nil {
		t.stop()
		t.stop = nil
	}
	dl, timed := ctx.Deadline()
	timed = timed && ctx.Value(deadlineOnlyKey{}) != nil
	t.mu.Lock()
	t.deadline = dl
	t.mu.Unlock()
	t.watch(ctx, dl, timed)
}

// batchFuncs are the host functions of batch delivery (group "core").
var batchFuncs = []hostFunc{fetchRespond}

// fetchRespond is fetch_respond(resp_ptr, resp_len) -> i32: inside
// edgeshard_fetch_batch, the encoded response (abi.AppendResponse) to the
// batch's current request. The host copies it, ends that request's event
// and starts the next one.
//
// Result: 0. Errnos: ErrnoInvalid outside edgeshard_fetch_batch or once
// every request of the batch is answered. A response that is not a valid
// one (as edgeshard_fetch's: encoding, status 200..599, body size, inside
// memory) traps the guest: the request fails as a bad response and the
// instance is discarded.
var fetchRespond = hostFunc{abi.FnFetchRespond, fetchRespondFn, p(i32, i32), p(i32)}

func fetchRespondFn(c *call, mod api.Module, s []uint64) {
	b := c.batch
	if b == nil {
		c.fail(s, abi.ErrnoInvalid, abi.FnFetchRespond+" answers a request of "+abi.ExportFetchBatch+"; none is in progress")
		return
	}
	if b.answered >= b.n {
		c.fail(s, abi.ErrnoInvalid, fmt.Sprintf("%s: all %d requests of the batch are answered", abi.FnFetchRespond, b.n))
		return
	}
	resp, err := readResponse(mod, u32(s[0]), u32(s[1]), false) // upgrades are never batched
	if err != nil {
		b.bad = err
		c.crash = err // trap: the instance is discarded, as for edgeshard_fetch
		s[0] = neg(abi.ErrnoInvalid)
		return
	}
	k := b.answered
	b.answered++
	next := b.done(k, resp)
	s[0] = 0
	if b.answered < b.n {
		b.inst.nextEvent(next)
	}
}

// readResponse reads and checks the response at ptr..ptr+n (allow101:
// decodeResponse's).
func readResponse(mod api.Module, ptr, n uint32, allow101 bool) (*abi.Response, error) {
	if n > abi.MaxResponseBody+64<<10 {
		return nil, fmt.Errorf("%w: response of %d bytes exceeds the limit of %d", ErrBadResponse, n, abi.MaxResponseBody)
	}
	raw, ok := mod.Memory().Read(ptr, n)
	if !ok {
		return nil, fmt.Errorf("%w: response pointer %#x+%d outside memory", ErrBadResponse, ptr, n)
	}
	return decodeResponse(raw, allow101)
}
