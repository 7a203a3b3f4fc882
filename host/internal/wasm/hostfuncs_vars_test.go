package wasm

import (
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// Tests of the vars host function, var_get.

// TestVarsHostileArguments: var_get answers every argument, bad ones
// included, with a length or an errno.
func TestVarsHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	runSteps(t, d, []step{
		{"var name past memory", nil, "var_get", []uint64{oob, 1, buf, 16}, eFault, ""},
		{"var name over the limit", nil, "var_get", []uint64{offBig, abi.MaxVarName + 1, buf, 16}, eTooLarge, ""},
		{"var unset", nil, "var_get", []uint64{offKey, 1, buf, 16}, eNotFound, ""},
		{"var into a buffer past memory", nil, "var_get", []uint64{offVar, 1, oob - 1, 16}, eFault, ""},
		{"var", nil, "var_get", []uint64{offVar, 1, buf, 16}, 3, "abc"},
	})
}

// TestVarsValues: a name of the longest length is looked up; a value
// larger than the buffer is held for result_take.
func TestVarsValues(t *testing.T) {
	d := newHostileDriver(t)
	long := strings.Repeat("n", abi.MaxVarName)
	d.env.vars[long] = strings.Repeat("v", 100)
	d.write(t, offData, []byte(long))
	runSteps(t, d, []step{
		{"longest name, small buffer", nil, "var_get", []uint64{offData, abi.MaxVarName, buf, 10}, 100, ""},
		{"take", nil, "result_take", []uint64{buf, 100}, 100, strings.Repeat("v", 100)},
		{"empty name", nil, "var_get", []uint64{offData, 0, buf, 10}, eNotFound, ""},
	})
}
