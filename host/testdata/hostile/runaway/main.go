// Command runaway is a hostile Go plugin: each route misbehaves the way a
// buggy or malicious shard might.
//
//	/alloc        allocates without bound until the memory cap stops it
//	/exit         calls os.Exit(3)
//	/result-take  calls result_take with no result held; answers the result
//	/pointers     calls host functions with pointers and lengths outside
//	              its memory; answers their results, comma-separated
//	anything else "ok"
package main

import (
	"os"
	"strconv"
	"unsafe"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

// Raw imports, declared with integer parameters so the plugin can pass any
// address, as a guest written in another language could.
//
//go:wasmimport edgeshard result_take
func resultTake(buf, bufCap uint32) int64

//go:wasmimport edgeshard storage_get
func storageGet(k, kl, buf, bufCap uint32) int64

//go:wasmimport edgeshard storage_put
func storagePut(k, kl, v, vl, flags uint32) int32

//go:wasmimport edgeshard log_write
func logWrite(level int32, p, l uint32) int32

func main() {}

var hoard [][]byte

func init() {
	sdk.Serve(sdk.Handlers{Fetch: func(req *sdk.Request) *sdk.Response {
		switch sdk.PathOnly(req) {
		case "/alloc":
			for {
				hoard = append(hoard, make([]byte, 1<<20))
			}
		case "/exit":
			os.Exit(3)
		case "/result-take":
			var buf [16]byte
			return sdk.Text(200, strconv.FormatInt(resultTake(uint32(ptr(buf[:])), 16), 10))
		case "/pointers":
			const far = 0xfffffff0
			rs := []int64{
				storageGet(far, 8, 0, 0),
				storageGet(0, 0xffffffff, 0, 0),
				int64(storagePut(far, 1, 0, 1, 0)),
				int64(storagePut(0, 1, far, 64, 0)),
				int64(logWrite(1, far, 100)),
			}
			var b []byte
			for i, r := range rs {
				if i > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendInt(b, r, 10)
			}
			return sdk.Text(200, string(b))
		}
		return sdk.Text(200, "ok")
	}})
}

func ptr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
