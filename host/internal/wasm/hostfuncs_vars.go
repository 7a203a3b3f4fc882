package wasm

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Vars host functions (group "vars"): configuration values, through
// Env.Var (the host config's [vars], overridden by environment variables;
// "edgeshard.shard" names the calling shard, "edgeshard.sql_dialect" the
// dialect of its SQL database).

// varsFuncs are the host functions of group "vars".
var varsFuncs = []hostFunc{varGet}

// varGet is var_get(name_ptr, name_len, buf, cap) -> i64: the value of a
// var.
//
// Parameters:
//   - name_ptr, name_len: the var's name, at most abi.MaxVarName bytes;
//   - buf, cap: where the value goes (held for result_take past cap).
//
// Result: the value's length. Errnos: ErrnoNotFound when the var is unset;
// ErrnoFault when the name or the written buffer is outside memory;
// ErrnoTooLarge for a name over abi.MaxVarName (no message).
var varGet = hostFunc{abi.FnVarGet, varGetFn, p(i32, i32, i32, i32), p(i64)}

func varGetFn(c *call, mod api.Module, s []uint64) {
	name, ok := shortArg(mod, s, 0, abi.MaxVarName)
	if !ok {
		return
	}
	if v, found := c.env.Var(string(name)); c.found(s, found, nil) {
		s[0] = c.reply(mod, []byte(v), u32(s[2]), u32(s[3]))
	}
}
