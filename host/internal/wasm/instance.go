package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmbin"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// Errors an instance call can end with. After any of them the instance is
// unusable and must be closed; the shard restarts from storage.
var (
	// ErrTimeout: the call ran past its deadline and the instance was closed.
	ErrTimeout = errors.New("plugin exceeded its event deadline")
	// ErrTrap: the guest trapped, panicked or exited.
	ErrTrap = errors.New("plugin trapped")
	// ErrBadResponse: the guest returned bytes that are not a response.
	ErrBadResponse = errors.New("plugin returned a malformed response")
)

// InstanceConfig configures one instance.
type InstanceConfig struct {
	// Stdout and Stderr receive the guest's output (panics go to Stderr).
	Stdout, Stderr io.Writer
	// Walltime and Nanotime override the guest's clocks (a virtual clock in
	// tests); nil uses the system clocks.
	Walltime func() time.Time
	Nanotime func() int64
}

// Instance is one live plugin instance. It is not safe for concurrent use:
// one goroutine (the shard's) owns it.
type Instance struct {
	mod        api.Module
	fnAlloc    api.Function
	fnFetch    api.Function
	fnAlarm    api.Function
	fnWS       api.Function // optional: abi.ExportWSEvent (instance_ws.go)
	fnBatch    api.Function // optional (batch.go)
	abiVersion int
	stack      [2]uint64
	reqBuf     []byte
	dead       error
	intr       interrupter
	cctx       callCtx
	batch      batchCall // of the edgeshard_fetch_batch call in progress
}

// Instantiate creates an instance of m: runs the WASI reactor start
// function _initialize, checks the ABI version, then the init export.
func (m *Module) Instantiate(ctx context.Context, cfg InstanceConfig) (*Instance, error) {
	return m.engine.instantiate(ctx, m.compiled, cfg)
}

func (e *Engine) instantiate(ctx context.Context, c wazero.CompiledModule, cfg InstanceConfig) (*Instance, error) {
	mc := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(). // _initialize runs below, under the interrupter
		WithRandSource(rand.Reader)
	if cfg.Stdout != nil {
		mc = mc.WithStdout(cfg.Stdout)
	}
	if cfg.Stderr != nil {
		mc = mc.WithStderr(cfg.Stderr)
	}
	if cfg.Walltime != nil {
		wt := cfg.Walltime
		mc = mc.WithWalltime(func() (int64, int32) {
			t := wt()
			return t.Unix(), int32(t.Nanosecond())
		}, sys.ClockResolution(time.Millisecond))
	} else {
		mc = mc.WithSysWalltime()
	}
	if cfg.Nanotime != nil {
		mc = mc.WithNanotime(cfg.Nanotime, sys.ClockResolution(1))
	} else {
		mc = mc.WithSysNanotime()
	}
	// A start function or init that never returns must not wedge its
	// caller (a shard's actor, a module load): the interrupter stops it
	// when this deadline passes, as for an event.
	ctx, cancel := context.WithTimeout(ctx, e.cfg.StartTimeout)
	defer cancel()
	// Linear memory in its own mapping: grows without copying, costs RSS
	// only for touched pages, reused once released (memory_unix.go).
	// Host functions called from init (a plugin reading a var) find no
	// call state in this context and answer "not granted".
	ictx := experimental.WithMemoryAllocator(ctx, e.alloc)
	mod, err := e.rt.InstantiateModule(ictx, c, mc)
	if err != nil {
		return nil, e.startErr("link", err)
	}
	inst := &Instance{
		mod:     mod,
		fnAlloc: mod.ExportedFunction(abi.ExportAlloc),
		fnFetch: mod.ExportedFunction(abi.ExportFetch),
		fnAlarm: mod.ExportedFunction(abi.ExportAlarm),
		fnWS:    mod.ExportedFunction(abi.ExportWSEvent),
		fnBatch: mod.ExportedFunction(abi.ExportFetchBatch),
	}
	if inst.fnAlloc == nil || inst.fnFetch == nil || inst.fnAlarm == nil {
		mod.Close(ctx)
		return nil, invalid("missing exports after instantiation")
	}
	if !e.cfg.UnsafeNoTerminationChecks {
		g, ok := mod.ExportedGlobal(wasmbin.InterruptExport).(api.MutableGlobal)
		if !ok {
			mod.Close(ctx)
			return nil, fmt.Errorf("wasm: module compiled without the interrupt global %q", wasmbin.InterruptExport)
		}
		inst.intr.flag = g
	}
	if fn := mod.ExportedFunction(wasmbin.StartExport); fn != nil {
		if err := inst.call(ictx, fn, nil); err != nil {
			mod.Close(ctx)
			return nil, e.startErr("start (start section)", err)
		}
	}
	if fn := mod.ExportedFunction(abi.ExportInitialize); fn != nil {
		if err := inst.call(ictx, fn, nil); err != nil {
			mod.Close(ctx)
			var ee *sys.ExitError
			if errors.As(err, &ee) && ee.ExitCode() == 0 {
				return nil, fmt.Errorf("start (_initialize): %w: exited with code 0 (a reactor must return, not exit)", ErrTrap)
			}
			return nil, e.startErr("start (_initialize)", err)
		}
	}
	v, err := inst.callI32(ictx, abi.ExportABIVersion)
	if err != nil {
		mod.Close(ctx)
		return nil, e.startErr(abi.ExportABIVersion, err)
	}
	if v != abi.Version {
		mod.Close(ctx)
		return nil, invalid("module speaks ABI version %d; this host implements version %d", v, abi.Version)
	}
	inst.abiVersion = int(v)
	if errno, err := inst.callI32(ictx, abi.ExportInit); err != nil {
		mod.Close(ctx)
		return nil, e.startErr(abi.ExportInit, err)
	} else if errno != 0 {
		mod.Close(ctx)
		return nil, invalid("%s returned errno %d (%s); a plugin is ready only when %s returns 0 (abi/ABI.md, section 2) — a Go plugin must call sdk.Serve from an init function",
			abi.ExportInit, errno, abi.Errno(errno).Error(), abi.ExportInit)
	}
	return inst, nil
}

func (i *Instance) callI32(ctx context.Context, name string) (uint32, error) {
	fn := i.mod.ExportedFunction(name)
	var stack [1]uint64
	if err := i.call(ctx, fn, stack[:]); err != nil {
		return 0, err
	}
	return uint32(stack[0]), nil
}

// call runs one exported function with the interrupter armed. A call the
// interrupter stopped returns an error wrapping ctx's error, which
// classify maps to ErrTimeout (deadline) or a cancelled ErrTrap.
func (i *Instance) call(ctx context.Context, fn api.Function, stack []uint64) error {
	if err := i.intr.arm(ctx); err != nil {
		return err
	}
	err := fn.CallWithStack(ctx, stack)
	if cause := i.intr.disarm(); cause != nil && err != nil {
		return fmt.Errorf("%w: stopped by the host (%v)", cause, err)
	}
	return err
}

// startErr classifies an error of one instantiation phase, naming the
// phase and, for a timeout, the start deadline.
func (e *Engine) startErr(phase string, err error) error {
	err = classify(err)
	if errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%s did not return before the start deadline (start timeout %v): %w", phase, e.cfg.StartTimeout, err)
	}
	return fmt.Errorf("%s: %w", phase, err)
}

// classify maps a wazero call error to ErrTimeout or ErrTrap, keeping the
// original message.
func classify(err error) error {
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		switch ee.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return fmt.Errorf("%w (%v)", ErrTimeout, err)
		case sys.ExitCodeContextCanceled:
			return fmt.Errorf("%w: cancelled (%v)", ErrTrap, err)
		}
		return fmt.Errorf("%w: exited with code %d", ErrTrap, ee.ExitCode())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (%v)", ErrTimeout, err)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: cancelled (%v)", ErrTrap, err)
	}
	return fmt.Errorf("%w: %v", ErrTrap, err)
}

// Err returns why the instance is dead, or nil.
func (i *Instance) Err() error { return i.dead }

// MemoryBytes returns the size of the guest's linear memory.
func (i *Instance) MemoryBytes() uint64 {
	if mem := i.mod.Memory(); mem != nil {
		return uint64(mem.Size())
	}
	return 0
}

// Fetch delivers a request. env serves the host functions the guest calls
// during it. ctx should carry the event deadline: past it the instance is
// closed and ErrTimeout returned.
func (i *Instance) Fetch(ctx context.Context, env Env, req *abi.Request) (*abi.Response, error) {
	if i.dead != nil {
		return nil, i.dead
	}
	i.reqBuf = abi.AppendRequest(i.reqBuf[:0], req)
	if err := i.deliver(ctx, env, i.fnFetch); err != nil {
		return nil, err
	}
	packed := i.stack[0]
	resp, err := readResponse(i.mod, uint32(packed>>32), uint32(packed), wsAccepted(env))
	if err != nil {
		return nil, i.killWith(err)
	}
	return resp, nil
}

// decodeResponse decodes and checks an encoded response the guest
// returned, copying its body out of guest memory; an error wraps
// ErrBadResponse. allow101: the shard accepted a WebSocket in this event
// (ws_accept), so 101 Switching Protocols is its answer.
func decodeResponse(raw []byte, allow101 bool) (*abi.Response, error) {
	resp, err := abi.DecodeResponse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadResponse, err)
	}
	// 1xx statuses are refused too: net/http would send 100/103 as an
	// informational response followed by an implicit 200, and 101 as a
	// protocol switch, neither of which the shard can mean.
	if (resp.Status < 200 || resp.Status > 599) && !(resp.Status == 101 && allow101) {
		return nil, fmt.Errorf("%w: status %d (want 200..599), or 101 after ws_accept", ErrBadResponse, resp.Status)
	}
	if len(resp.Body) > abi.MaxResponseBody {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d", ErrBadResponse, len(resp.Body), abi.MaxResponseBody)
	}
	resp.Body = append([]byte(nil), resp.Body...) // raw aliases guest memory
	return resp, nil
}

// deliver starts an event under ctx and env and calls fn, an export
// taking (ptr, len), on the event encoded in i.reqBuf; fn's result is in
// i.stack[0]. A failure has killed the instance.
func (i *Instance) deliver(ctx context.Context, env Env, fn api.Function) error {
	ctx = i.cctx.reset(ctx, env)
	i.cctx.c.begin(false)
	ptr, n, err := i.writeRequests(ctx)
	if err != nil {
		return err
	}
	i.stack[0], i.stack[1] = uint64(ptr), uint64(n)
	if err := i.call(ctx, fn, i.stack[:]); err != nil {
		return i.kill(err)
	}
	return nil
}

// writeRequests has the guest allocate room for the encoded request(s)
// in i.reqBuf (edgeshard_alloc) and writes them there, returning where
// and how many bytes. A failure has killed the instance.
func (i *Instance) writeRequests(ctx context.Context) (ptr, n uint32, err error) {
	n = uint32(len(i.reqBuf))
	i.stack[0] = uint64(n)
	if err := i.call(ctx, i.fnAlloc, i.stack[:]); err != nil {
		return 0, 0, i.kill(err)
	}
	ptr = uint32(i.stack[0])
	if ptr == 0 {
		// Like malloc's NULL: the guest could not allocate. Writing the
		// request at address 0 would overwrite whatever the guest keeps there.
		return 0, 0, i.killWith(fmt.Errorf("%w: %s(%d) returned 0: a plugin must return a pointer to %d writable bytes (abi/ABI.md, section 3); 0 means it could not allocate them",
			ErrTrap, abi.ExportAlloc, n, n))
	}
	if n > 0 && !i.mod.Memory().Write(ptr, i.reqBuf) {
		return 0, 0, i.killWith(fmt.Errorf("%w: %s(%d) returned pointer %#x: the request's %d bytes would lie outside memory (abi/ABI.md, section 3)", ErrTrap, abi.ExportAlloc, n, ptr, n))
	}
	if cap(i.reqBuf) > 1<<20 {
		i.reqBuf = nil // do not pin a large request buffer
	}
	return ptr, n, nil
}

// Alarm runs the alarm handler. ok is false when the handler reported a
// failure (the host retries); err is set when the instance died.
func (i *Instance) Alarm(ctx context.Context, env Env, retryCount int) (ok bool, err error) {
	if i.dead != nil {
		return false, i.dead
	}
	ctx = i.cctx.reset(ctx, env)
	i.cctx.c.begin(true)
	i.stack[0] = uint64(uint32(retryCount))
	if err := i.call(ctx, i.fnAlarm, i.stack[:]); err != nil {
		return false, i.kill(err)
	}
	return uint32(i.stack[0]) == 0, nil
}

func (i *Instance) kill(err error) error { return i.killWith(classify(err)) }

func (i *Instance) killWith(err error) error {
	i.dead = err
	i.intr.close()
	i.mod.Close(context.Background())
	return err
}

// Close releases the instance.
func (i *Instance) Close(ctx context.Context) error {
	if i.dead == nil {
		i.dead = errors.New("instance closed")
	}
	i.intr.close()
	return i.mod.Close(ctx)
}
