// Command badabi is a plugin that claims ABI version 99: the host must
// refuse it at load with a clear error.
package main

import "unsafe"

func main() {}

var buf [64]byte

//go:wasmexport edgeshard_abi_version
func abiVersion() int32 { return 99 }

//go:wasmexport edgeshard_init
func initExport() int32 { return 0 }

//go:wasmexport edgeshard_alloc
func alloc(n int32) unsafe.Pointer { return unsafe.Pointer(&buf[0]) }

//go:wasmexport edgeshard_fetch
func fetch(p unsafe.Pointer, n int32) int64 { return 0 }

//go:wasmexport edgeshard_alarm
func alarm(retry int32) int32 { return 0 }
