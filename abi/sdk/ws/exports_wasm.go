//go:build wasip1

package ws

import "unsafe"

// exportWSEvent is edgeshard_ws_event(ptr, len) -> i32: the host wrote
// the encoded event where edgeshard_alloc (package sdk) pointed.
//
//go:wasmexport edgeshard_ws_event
func exportWSEvent(ptr unsafe.Pointer, size int32) int32 {
	var in []byte
	if size > 0 {
		in = unsafe.Slice((*byte)(ptr), size)
	}
	return handle(in)
}
