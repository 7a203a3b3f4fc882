//go:build !wasip1

package sdk

import "unsafe"

// Host functions of ABI v1 (import module "edgeshard"); see abi/ABI.md.
// The Go linker drops imports a plugin never calls, so a plugin's import
// section lists only the bindings it uses.

func hostResultTake(buf unsafe.Pointer, bufCap uint32) int64 { panic(errNative) }

func hostErrorMessage(buf unsafe.Pointer, bufCap uint32) int64 { panic(errNative) }

func hostStorageGet(k unsafe.Pointer, kl uint32, buf unsafe.Pointer, bufCap uint32) int64 {
	panic(errNative)
}

func hostStorageGetMulti(keys unsafe.Pointer, kl uint32, buf unsafe.Pointer, bufCap uint32) int64 {
	panic(errNative)
}

func hostStoragePut(k unsafe.Pointer, kl uint32, v unsafe.Pointer, vl uint32, flags uint32) int32 {
	panic(errNative)
}

func hostStoragePutMulti(p unsafe.Pointer, l uint32, flags uint32) int32 { panic(errNative) }

func hostStorageDelete(k unsafe.Pointer, kl uint32) int32 { panic(errNative) }

func hostStorageDeleteMulti(p unsafe.Pointer, l uint32) int64 { panic(errNative) }

func hostStorageList(opt unsafe.Pointer, ol uint32, buf unsafe.Pointer, bufCap uint32) int64 {
	panic(errNative)
}

func hostStorageDeleteAll() int32 { panic(errNative) }

func hostAlarmSet(unixMs int64) int32 { panic(errNative) }

func hostAlarmGet() int64 { panic(errNative) }

func hostAlarmDelete() int32 { panic(errNative) }

func hostVarGet(n unsafe.Pointer, nl uint32, buf unsafe.Pointer, bufCap uint32) int64 {
	panic(errNative)
}

func hostLogWrite(level int32, p unsafe.Pointer, l uint32) int32 { panic(errNative) }

func hostSQLExec(p unsafe.Pointer, l uint32, buf unsafe.Pointer, bufCap uint32) int64 {
	panic(errNative)
}

func hostAnalyticsWrite(p unsafe.Pointer, l uint32) int32 { panic(errNative) }

func hostShardCall(p unsafe.Pointer, l uint32, buf unsafe.Pointer, bufCap uint32) int64 {
	panic(errNative)
}

func hostHTTPFetch(p unsafe.Pointer, l uint32, buf unsafe.Pointer, bufCap uint32) int64 {
	panic(errNative)
}

// errNative is the panic value of every host function outside wasm: the SDK
// only works inside a plugin instance.
const errNative = "sdk: host functions are only available inside a wasip1 plugin"
