package sdk

import (
	"unsafe"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk/internal/guestmem"
)

// state is the SDK's per-instance runtime state. A guest is single-threaded
// and calls never overlap, so plain fields suffice.
type state struct {
	handlers Handlers
	served   bool
	in       []byte // request buffer handed to the host by edgeshard_alloc
	out      []byte // encoded response, valid until the next call
	scratch  []byte // results of host calls
	enc      []byte // arguments of host calls
	events   uint32
	last     abi.Request // path and headers of the previous request (strings only)
}

var st state

// yieldEvery is how many events pass between scheduler yields. A Go guest
// only finishes garbage collection cycles when its goroutines get to run;
// without a yield memory grows under sustained load.
const yieldEvery = 8

// Serve registers the plugin's handlers. Call it from an init function.
func Serve(h Handlers) {
	st.handlers = h
	st.served = true
}

// result interprets an i64 result of a host function that fills
// st.scratch: r < 0 is -errno; r ≤ cap means the bytes are in scratch; a
// larger r means the host holds the result and result_take fetches it.
func result(op string, r int64) ([]byte, error) {
	if r < 0 {
		return nil, hostError(op, abi.Errno(-r))
	}
	if int(r) > cap(st.scratch) {
		st.scratch = make([]byte, 0, int(r)+int(r)/4)
		r2 := hostResultTake(guestmem.Bytes(st.scratch[:cap(st.scratch)]), uint32(cap(st.scratch)))
		if r2 < 0 {
			return nil, hostError(op, abi.Errno(-r2))
		}
		r = r2
	}
	return st.scratch[:r], nil
}

// scratchArgs returns (ptr, cap) of the scratch buffer for a host call.
func scratchArgs() (unsafe.Pointer, uint32) {
	if cap(st.scratch) == 0 {
		st.scratch = make([]byte, 0, 4096)
	}
	return unsafe.Pointer(unsafe.SliceData(st.scratch[:cap(st.scratch)])), uint32(cap(st.scratch))
}

func hostError(op string, e abi.Errno) error {
	err := &HostError{Errno: e, Op: op}
	switch e {
	case abi.ErrnoSQL, abi.ErrnoAnalytics, abi.ErrnoInvalid, abi.ErrnoTooLarge, abi.ErrnoIO, abi.ErrnoNotGranted, abi.ErrnoLimit, abi.ErrnoQuota,
		abi.ErrnoDeadline, abi.ErrnoDeadlock, abi.ErrnoRefused, abi.ErrnoNetwork:
		p, c := scratchArgs()
		if n := hostErrorMessage(p, c); n > 0 && int(n) <= int(c) {
			err.Message = string(st.scratch[:n])
		}
	}
	return err
}

func errnoErr(op string, r int32) error {
	if r >= 0 {
		return nil
	}
	return hostError(op, abi.Errno(-r))
}
