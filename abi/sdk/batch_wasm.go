//go:build wasip1

package sdk

import (
	"encoding/binary"
	"unsafe"
)

// Batch delivery (abi/ABI.md, "Batch delivery"): when a shard has a
// backlog the host may hand the guest several requests in one call. Each
// is handled exactly as edgeshard_fetch handles one — the same handler,
// one event each, answered in order through fetch_respond — so a plugin
// needs no change to benefit; the host delivers one by one to a module
// without this export.

//go:wasmimport edgeshard fetch_respond
func hostFetchRespond(p unsafe.Pointer, l uint32) int32

// exportFetchBatch handles count requests laid out at ptr..ptr+size, each
// a u32 length and that many bytes of an encoded request, and returns how
// many it answered.
//
//go:wasmexport edgeshard_fetch_batch
func exportFetchBatch(ptr unsafe.Pointer, size int32, count int32) int32 {
	var in []byte
	if size > 0 {
		in = unsafe.Slice((*byte)(ptr), size)
	}
	for k := int32(0); k < count; k++ {
		if len(in) < 4 {
			return k
		}
		n := binary.LittleEndian.Uint32(in)
		if uint32(len(in)-4) < n {
			return k
		}
		serve(in[4 : 4+n])
		in = in[4+n:]
		if hostFetchRespond(unsafe.Pointer(unsafe.SliceData(st.out)), uint32(len(st.out))) != 0 {
			return k + 1
		}
	}
	return count
}
