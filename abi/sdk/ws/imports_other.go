//go:build !wasip1

package ws

import "unsafe"

// Outside wasm the host functions panic: the package only works inside a
// plugin instance.

const errNative = "sdk/ws: host functions are only available inside a wasip1 plugin"

func hostResultTake(unsafe.Pointer, uint32) int64                       { panic(errNative) }
func hostErrorMessage(unsafe.Pointer, uint32) int64                     { panic(errNative) }
func hostWSAccept(unsafe.Pointer, uint32, unsafe.Pointer, uint32) int64 { panic(errNative) }
func hostWSSend(int64, uint32, unsafe.Pointer, uint32) int32            { panic(errNative) }
func hostWSBroadcast(unsafe.Pointer, uint32, uint32, unsafe.Pointer, uint32) int64 {
	panic(errNative)
}
func hostWSClose(int64, int32, unsafe.Pointer, uint32) int32          { panic(errNative) }
func hostWSList(unsafe.Pointer, uint32, unsafe.Pointer, uint32) int64 { panic(errNative) }
func hostWSSetAttachment(int64, unsafe.Pointer, uint32) int32         { panic(errNative) }
func hostWSSetAutoResponse(unsafe.Pointer, uint32, unsafe.Pointer, uint32) int32 {
	panic(errNative)
}
