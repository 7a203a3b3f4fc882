//go:build wasip1

package sdk

import "unsafe"

// Host functions of ABI v1 (import module "edgeshard"); see abi/ABI.md.
// The Go linker drops imports a plugin never calls, so a plugin's import
// section lists only the bindings it uses.

//go:wasmimport edgeshard result_take
func hostResultTake(buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard error_message
func hostErrorMessage(buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard storage_get
func hostStorageGet(k unsafe.Pointer, kl uint32, buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard storage_get_multi
func hostStorageGetMulti(keys unsafe.Pointer, kl uint32, buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard storage_put
func hostStoragePut(k unsafe.Pointer, kl uint32, v unsafe.Pointer, vl uint32, flags uint32) int32

//go:wasmimport edgeshard storage_put_multi
func hostStoragePutMulti(p unsafe.Pointer, l uint32, flags uint32) int32

//go:wasmimport edgeshard storage_delete
func hostStorageDelete(k unsafe.Pointer, kl uint32) int32

//go:wasmimport edgeshard storage_delete_multi
func hostStorageDeleteMulti(p unsafe.Pointer, l uint32) int64

//go:wasmimport edgeshard storage_list
func hostStorageList(opt unsafe.Pointer, ol uint32, buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard storage_delete_all
func hostStorageDeleteAll() int32

//go:wasmimport edgeshard alarm_set
func hostAlarmSet(unixMs int64) int32

//go:wasmimport edgeshard alarm_get
func hostAlarmGet() int64

//go:wasmimport edgeshard alarm_delete
func hostAlarmDelete() int32

//go:wasmimport edgeshard var_get
func hostVarGet(n unsafe.Pointer, nl uint32, buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard log_write
func hostLogWrite(level int32, p unsafe.Pointer, l uint32) int32

//go:wasmimport edgeshard sql_exec
func hostSQLExec(p unsafe.Pointer, l uint32, buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard analytics_write
func hostAnalyticsWrite(p unsafe.Pointer, l uint32) int32

//go:wasmimport edgeshard shard_call
func hostShardCall(p unsafe.Pointer, l uint32, buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard http_fetch
func hostHTTPFetch(p unsafe.Pointer, l uint32, buf unsafe.Pointer, bufCap uint32) int64
