package wasm

import (
	"context"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Host functions of ABI v1, module "edgeshard". Every function is
// stack-based (api.GoModuleFunc): parameters arrive in stack[0..], the result
// goes in stack[0]. Pointers and lengths are u32 offsets into the guest's
// memory; results of type i64 are a length (≥ 0) or -errno. abi/ABI.md is
// the specification; each function below repeats its contract briefly.

type hostFunc struct {
	name    string
	fn      func(c *call, mod api.Module, s []uint64)
	params  []api.ValueType
	results []api.ValueType
}

func p(ts ...api.ValueType) []api.ValueType { return ts }

func hostFuncs() []hostFunc {
	return []hostFunc{
		// result_take(buf, cap) -> i64: copies the result held back by the
		// previous call (it did not fit the guest's buffer). -ErrnoNoResult
		// when none is held; the needed size if cap is still too small.
		{abi.FnResultTake, resultTake, p(i32, i32), p(i64)},
		// error_message(buf, cap) -> i64: the detail of the last failed call.
		{abi.FnErrorMessage, errorMessage, p(i32, i32), p(i64)},

		{abi.FnStorageGet, storageGet, p(i32, i32, i32, i32), p(i64)},
		{abi.FnStorageGetMulti, storageGetMulti, p(i32, i32, i32, i32), p(i64)},
		{abi.FnStoragePut, storagePut, p(i32, i32, i32, i32, i32), p(i32)},
		{abi.FnStoragePutMulti, storagePutMulti, p(i32, i32, i32), p(i32)},
		{abi.FnStorageDelete, storageDelete, p(i32, i32), p(i32)},
		{abi.FnStorageDeleteMulti, storageDeleteMulti, p(i32, i32), p(i64)},
		{abi.FnStorageList, storageList, p(i32, i32, i32, i32), p(i64)},
		{abi.FnStorageDeleteAll, storageDeleteAll, nil, p(i32)},

		{abi.FnAlarmSet, alarmSet, p(i64), p(i32)},
		{abi.FnAlarmGet, alarmGet, nil, p(i64)},
		{abi.FnAlarmDelete, alarmDelete, nil, p(i32)},

		{abi.FnVarGet, varGet, p(i32, i32, i32, i32), p(i64)},
		{abi.FnLogWrite, logWrite, p(i32, i32, i32), p(i32)},
		{abi.FnSQLExec, sqlExec, p(i32, i32, i32, i32), p(i64)},
		{abi.FnAnalyticsWrite, analyticsWrite, p(i32, i32), p(i32)},
	}
}

func instantiateHostModule(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(abi.ImportModule)
	for _, hf := range hostFuncs() {
		if _, ok := abi.FunctionGroups[hf.name]; !ok {
			return fmt.Errorf("host function %s has no binding group", hf.name)
		}
		fn, name, ptypes, rtypes := hf.fn, hf.name, hf.params, hf.results
		b.NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				c := callFrom(ctx)
				if c == nil || c.env == nil {
					c = &call{}
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
					c.errMsg = ""
					fn(c, mod, stack)
					var res uint64
					if len(rtypes) > 0 {
						res = stack[0]
						if rtypes[0] == api.ValueTypeI32 {
							res = uint64(int64(int32(uint32(res))))
						}
					}
					c.tracer.TraceHostCall(name, params, res, c.errMsg)
				} else {
					fn(c, mod, stack)
				}
				if c.crash != nil {
					err := c.crash
					c.crash = nil
					panic(err) // wazero turns this into a trap of the calling guest
				}
			}), hf.params, hf.results).
			Export(hf.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

func u32(v uint64) uint32 { return uint32(v) }

func resultTake(c *call, mod api.Module, s []uint64) {
	if c.pending == nil {
		s[0] = neg(abi.ErrnoNoResult)
		return
	}
	buf, bufCap := u32(s[0]), u32(s[1])
	if uint32(len(c.pending)) > bufCap {
		s[0] = uint64(len(c.pending))
		return
	}
	if !mod.Memory().Write(buf, c.pending) {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	s[0] = uint64(len(c.pending))
	c.pending = nil
}

func errorMessage(c *call, mod api.Module, s []uint64) {
	buf, bufCap := u32(s[0]), u32(s[1])
	msg := c.errMsg
	if uint32(len(msg)) > bufCap {
		msg = msg[:bufCap]
	}
	if len(msg) > 0 && !mod.Memory().Write(buf, []byte(msg)) {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	s[0] = uint64(len(msg))
}
