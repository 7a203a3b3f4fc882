//go:build wasip1

package sdk

import (
	"runtime"
	"runtime/debug"
	"unsafe"

	"github.com/edgeshard/edgeshard/abi"
)

// guestGCPercent is the Go garbage collector's GOGC inside a guest. A
// guest's linear memory never shrinks and every page its heap once
// touched stays resident, so the heap's high-water mark is what a live
// shard costs the host: with Go's default (100, a heap goal of at least
// 4 MiB) a busy guest held ~5 MiB of heap pages, with 25 (at least 1 MiB)
// ~2.2 MiB, at no measurable cost per event for the SDK's small heaps
// (docs/BENCHMARKS.md, edge_soak). The SDK sets it before the plugin's
// own init functions run; a plugin may set another with
// debug.SetGCPercent.
const guestGCPercent = 25

func init() { debug.SetGCPercent(guestGCPercent) }

//go:wasmexport edgeshard_abi_version
func exportABIVersion() int32 { return abi.Version }

//go:wasmexport edgeshard_init
func exportInit() int32 {
	if !st.served || st.handlers.Fetch == nil {
		return int32(abi.ErrnoInvalid)
	}
	st.scratch = make([]byte, 0, 4096)
	return 0
}

//go:wasmexport edgeshard_alloc
func exportAlloc(size int32) unsafe.Pointer {
	if size < 0 {
		return nil
	}
	n := int(size)
	if cap(st.in) < n || cap(st.in) == 0 {
		st.in = make([]byte, 0, n+n/4+64)
	}
	st.in = st.in[:n]
	return unsafe.Pointer(unsafe.SliceData(st.in[:cap(st.in)]))
}

func tick() {
	st.events++
	if st.events%yieldEvery == 0 {
		runtime.Gosched()
	}
}

//go:wasmexport edgeshard_fetch
func exportFetch(ptr unsafe.Pointer, size int32) int64 {
	var in []byte
	if size > 0 {
		in = unsafe.Slice((*byte)(ptr), size)
	}
	serve(in)
	if len(st.out) == 0 {
		return 0
	}
	p := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(st.out))))
	return int64(p<<32 | uint64(len(st.out)))
}

// serve handles one encoded request and leaves the encoded response in
// st.out.
func serve(in []byte) {
	tick()
	req, err := abi.DecodeRequestLike(in, &st.last)
	var resp *Response
	if err != nil {
		resp = Text(400, "sdk: malformed request envelope")
	} else {
		// Remember the strings (not the body) for the next decode.
		st.last.Path = req.Path
		st.last.Header = append(st.last.Header[:0], req.Header...)
		req.Body = append([]byte(nil), req.Body...)
		resp = st.handlers.Fetch(req)
		if resp == nil {
			resp = Text(500, "handler returned no response")
		}
	}
	st.out = abi.AppendResponse(st.out[:0], resp)
}

//go:wasmexport edgeshard_alarm
func exportAlarm(retryCount int32) int32 {
	tick()
	if st.handlers.Alarm == nil {
		return 0
	}
	if err := st.handlers.Alarm(AlarmInfo{RetryCount: int(retryCount), IsRetry: retryCount > 0}); err != nil {
		Log(abi.LogError, "alarm handler failed", "error", err.Error())
		return 1
	}
	return 0
}
