package wasm

import (
	"context"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Host functions of ABI v1, module "edgeshard", one file per binding group
// (hostfuncs_<group>.go), each declaring its functions' signatures beside
// their bodies; this file assembles the groups into the host module.
//
// Every function is stack-based (api.GoModuleFunc): parameters arrive in
// stack[0..], the result goes in stack[0]. Pointers and lengths are u32
// offsets into the guest's memory; results of type i64 are a length (≥ 0)
// or -errno, results of type i32 are 0 (or a count) or -errno. abi/ABI.md
// is the specification; each function repeats its contract briefly.
//
// Errnos every function may answer besides its own:
//
//   - ErrnoNotGranted outside an event (during instantiation: _initialize,
//     edgeshard_init), when no call state reaches the function;
//   - for a failure of the Env, the errno call.errno maps it to: the
//     CallError's, ErrnoNotGranted, ErrnoTooLarge or ErrnoInvalid for the
//     storage errors of those kinds, ErrnoDeadline, ErrnoCanceled, else
//     ErrnoIO (ErrnoSQL, ErrnoAnalytics in their groups); the error's text
//     becomes the message error_message returns. An error wrapping ErrCrash
//     traps the guest after the call instead.
//
// "Outside memory" (ErrnoFault) is any (ptr, len) whose bytes are not all
// inside the guest's memory, ptr + len wrapping past 2^32 included.

// hostFunc is one host function: its import name, its body and its wasm
// signature.
type hostFunc struct {
	name    string
	fn      func(c *call, mod api.Module, s []uint64)
	params  []api.ValueType
	results []api.ValueType
}

func p(ts ...api.ValueType) []api.ValueType { return ts }

// hostGroups are the host functions by binding group (abi.FunctionGroups).
var hostGroups = []struct {
	group string
	funcs []hostFunc
}{
	{abi.GroupCore, resultFuncs},
	{abi.GroupCore, batchFuncs},
	{abi.GroupStorage, storageFuncs},
	{abi.GroupAlarm, alarmFuncs},
	{abi.GroupVars, varsFuncs},
	{abi.GroupLog, logFuncs},
	{abi.GroupSQL, sqlFuncs},
	{abi.GroupAnalytics, analyticsFuncs},
	{abi.GroupWebSocket, wsFuncs},
	{abi.GroupCall, callFuncs},
	{abi.GroupFetch, fetchFuncs},
}

// hostFuncs lists every host function, group by group.
func hostFuncs() []hostFunc {
	var all []hostFunc
	for _, g := range hostGroups {
		all = append(all, g.funcs...)
	}
	return all
}

func instantiateHostModule(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(abi.ImportModule)
	for _, g := range hostGroups {
		for _, hf := range g.funcs {
			if group, ok := abi.FunctionGroups[hf.name]; !ok || group != g.group {
				return fmt.Errorf("host function %s is declared in binding group %q, the ABI puts it in %q", hf.name, g.group, group)
			}
			b.NewFunctionBuilder().
				WithGoModuleFunction(wrap(hf), hf.params, hf.results).
				Export(hf.name)
		}
	}
	_, err := b.Instantiate(ctx)
	return err
}

// wrap returns the Go function wazero calls for hf: it finds the call
// state, traces the call when the event is traced, and turns an injected
// crash into a trap of the calling guest.
func wrap(hf hostFunc) api.GoModuleFunc {
	fn, name, ptypes, rtypes := hf.fn, hf.name, hf.params, hf.results
	dec, decoded := tracers[name]
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		c := callFrom(ctx)
		if c == nil || c.env == nil {
			if len(stack) > 0 {
				stack[0] = neg(abi.ErrnoNotGranted)
			}
			return
		}
		if c.tracer != nil {
			params := make([]uint64, len(ptypes))
			for i, t := range ptypes {
				params[i] = stack[i]
				if t == api.ValueTypeI32 {
					params[i] = uint64(uint32(stack[i])) // the upper half of an i32 slot is garbage
				}
			}
			// Arguments are decoded before the call, as the function reads
			// them (its result may land on top of them).
			var args string
			switch {
			case !decoded:
				args = rawArgs(params)
			case dec.args != nil:
				args = dec.args(mod.Memory(), params)
			}
			c.msgSet = false
			fn(c, mod, stack)
			var msg string
			if c.msgSet {
				msg = c.errMsg // this call's failure, not an earlier one's
			}
			var res int64
			if len(rtypes) > 0 {
				res = int64(stack[0])
				if rtypes[0] == api.ValueTypeI32 {
					res = int64(int32(uint32(stack[0])))
				}
			}
			c.tracer.TraceHostCall(traceCall(dec, name, c, mod.Memory(), params, args, res, msg))
		} else {
			fn(c, mod, stack)
		}
		if c.crash != nil {
			err := c.crash
			c.crash = nil
			panic(err) // wazero turns this into a trap of the calling guest
		}
	}
}
