package sdk

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk/internal/guestmem"
)

// Var returns the value of a configured variable ([vars] in the host
// config, environment overrides applied) and whether it is set.
func Var(name string) (string, bool) {
	p, c := scratchArgs()
	r := hostVarGet(guestmem.String(name), uint32(len(name)), p, c)
	if r == -int64(abi.ErrnoNotFound) {
		return "", false
	}
	b, err := result("vars.get", r)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// VarOr returns the variable's value, or def when it is not set.
func VarOr(name, def string) string {
	if v, ok := Var(name); ok {
		return v
	}
	return def
}

// ShardName returns this shard's "<binding>/<shard>" name (the reserved
// var "edgeshard.shard"); it works in fetch and alarm handlers alike.
func ShardName() string {
	v, _ := Var("edgeshard.shard")
	return v
}
