package wasm

import (
	"math"
	"slices"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// Tests of the storage host functions.

// TestStorageHostileArguments: every storage function answers every
// argument, bad ones included, with a length or an errno, and changes
// nothing on a breach.
func TestStorageHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	bothStarts := abi.AppendListOptions(nil, &abi.ListOptions{HasStart: true, HasStartAfter: true})
	runSteps(t, d, []step{
		{"get key past memory", nil, "storage_get", []uint64{oob, 1, buf, 16}, eFault, ""},
		{"get key wrapping the address space", nil, "storage_get", []uint64{neg1, 2, buf, 16}, eFault, ""},
		{"get key of length 2^32-1", nil, "storage_get", []uint64{offKey, neg1, buf, 16}, eFault, ""},
		{"get key over the limit", nil, "storage_get", []uint64{offBig, abi.MaxKeySize + 1, buf, 16}, eTooLarge, ""},
		{"get absent key", nil, "storage_get", []uint64{offKey, 1, buf, 16}, eNotFound, ""},
		{"put", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
		{"put value past memory", nil, "storage_put", []uint64{offKey, 1, oob - 1, 2, 0}, eFault, ""},
		{"put key over the limit", nil, "storage_put", []uint64{offBig, abi.MaxKeySize + 1, offVal, 1, 0}, eTooLarge, ""},
		{"put value over the limit", nil, "storage_put", []uint64{offKey, 1, offBig, abi.MaxValueSize + 1, 0}, eTooLarge, ""},
		{"put key over the limit, value past memory", nil, "storage_put", []uint64{offBig, abi.MaxKeySize + 1, oob, 1, 0}, eFault, ""},
		{"put with undefined flags", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0xfffffffe}, eInvalid, ""},
		{"put with flag bit 1", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 3}, eInvalid, ""},
		{"get into a buffer past memory", nil, "storage_get", []uint64{offKey, 1, oob, 16}, eFault, ""},
		{"get into a buffer wrapping the address space", nil, "storage_get", []uint64{offKey, 1, neg1, 16}, eFault, ""},
		{"get into no buffer holds the result", nil, "storage_get", []uint64{offKey, 1, 0, 0}, 1, ""},
		{"get_multi keys past memory", nil, "storage_get_multi", []uint64{oob, 4, buf, 16}, eFault, ""},
		{"get_multi count 2^32-1", le32(math.MaxUint32), "storage_get_multi", []uint64{offData, 4, buf, 16}, eTooLarge, ""},
		{"get_multi count beyond input", le32(3), "storage_get_multi", []uint64{offData, 4, buf, 16}, eInvalid, ""},
		{"get_multi 129 keys", append(le32(129), make([]byte, 129*4)...), "storage_get_multi", []uint64{offData, 4 + 129*4, buf, 16}, eTooLarge, ""},
		{"get_multi over the byte limit", nil, "storage_get_multi", []uint64{offBig, maxKeysBytes + 1, buf, 16}, eTooLarge, ""},
		{"put_multi past memory", nil, "storage_put_multi", []uint64{oob - 2, 4, 0}, eFault, ""},
		{"put_multi truncated", le32(1), "storage_put_multi", []uint64{offData, 6, 0}, eInvalid, ""},
		{"put_multi 129 entries", append(le32(129), make([]byte, 129*8)...), "storage_put_multi", []uint64{offData, 4 + 129*8, 0}, eTooLarge, ""},
		{"delete key past memory", nil, "storage_delete", []uint64{oob, 1}, eFault, ""},
		{"delete key over the limit", nil, "storage_delete", []uint64{offBig, abi.MaxKeySize + 1}, eTooLarge, ""},
		{"delete", nil, "storage_delete", []uint64{offKey, 1}, 1, ""},
		{"delete absent", nil, "storage_delete", []uint64{offKey, 1}, 0, ""},
		{"delete_multi past memory", nil, "storage_delete_multi", []uint64{neg1, neg1}, eFault, ""},
		{"delete_multi count 2^31", le32(1 << 31), "storage_delete_multi", []uint64{offData, 4}, eTooLarge, ""},
		{"delete_multi trailing bytes", append(le32(0), 1), "storage_delete_multi", []uint64{offData, 5}, eInvalid, ""},
		{"list options past memory", nil, "storage_list", []uint64{oob, 1, buf, 16}, eFault, ""},
		{"list options truncated", le32(0), "storage_list", []uint64{offData, 4, buf, 16}, eInvalid, ""},
		{"list options over the limit", nil, "storage_list", []uint64{offBig, maxListOptsBytes + 1, buf, 16}, eTooLarge, ""},
		{"list with start and startAfter", bothStarts, "storage_list", []uint64{offData, uint64(len(bothStarts)), buf, 16}, eInvalid, ""},
		{"delete_all", nil, "storage_delete_all", nil, 0, ""},
	})
}

// TestStorageRoundTrip: what the storage functions write they read back,
// through a real instance: single and multi-key calls, lists in both
// orders with a limit, counts of deleted keys, and delete_all.
func TestStorageRoundTrip(t *testing.T) {
	d := newHostileDriver(t)
	kvs := []abi.KV{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("22")}, {Key: "c", Value: nil}}
	enc := abi.AppendKVs(nil, kvs)
	keys := abi.AppendKeys(nil, []string{"c", "x", "a"})
	found := abi.AppendKVs(nil, []abi.KV{{Key: "c", Value: []byte{}}, {Key: "a", Value: []byte("1")}})
	rev := abi.AppendListOptions(nil, &abi.ListOptions{Reverse: true, Limit: 2})
	revKVs := abi.AppendKVs(nil, []abi.KV{{Key: "c", Value: []byte{}}, {Key: "b", Value: []byte("22")}})
	runSteps(t, d, []step{
		{"put_multi", enc, "storage_put_multi", []uint64{offData, uint64(len(enc)), uint64(abi.PutAllowUnconfirmed)}, 0, ""},
		{"get_multi in request order", keys, "storage_get_multi", []uint64{offData, uint64(len(keys)), buf, 256}, int64(len(found)), string(found)},
		{"list reverse, limit 2", rev, "storage_list", []uint64{offData, uint64(len(rev)), buf, 256}, int64(len(revKVs)), string(revKVs)},
		{"put", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
		{"get", nil, "storage_get", []uint64{offKey, 1, buf, 16}, 1, "v"},
		{"delete_multi counts the keys that existed", keys, "storage_delete_multi", []uint64{offData, uint64(len(keys))}, 2, ""},
		{"get deleted", nil, "storage_get", []uint64{offKey, 1, buf, 16}, 1, "v"},
		{"delete_all", nil, "storage_delete_all", nil, 0, ""},
		{"get after delete_all", nil, "storage_get", []uint64{offKey, 1, buf, 16}, eNotFound, ""},
	})
	// The store holds copies: the guest's memory may change after the call.
	d.write(t, offVal, []byte("w"))
	runSteps(t, d, []step{
		{"put again", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
	})
	d.write(t, offVal, []byte("x"))
	if v, ok, err := d.env.st.Get("k"); err != nil || !ok || string(v) != "w" {
		t.Fatalf("stored value = %q, %v, %v; want the copy %q", v, ok, err, "w")
	}
}

// TestStorageNotGranted: without a Store every storage function answers
// ErrnoNotGranted with a message, before looking at its arguments.
func TestStorageNotGranted(t *testing.T) {
	d := newHostileDriver(t)
	d.env.noStore = true
	for _, name := range groupFunctions(abi.GroupStorage) {
		args := make([]uint64, len(hostFuncByName(t, name).params))
		for i := range args {
			args[i] = neg1 // outside memory: not read
		}
		got, err := d.call(name, args...)
		if err != nil || got != eNotGranted || d.c.errMsg != "storage is not granted to this binding" {
			t.Errorf("%s = %d, %v (error_message %q); want %d", name, got, err, d.c.errMsg, eNotGranted)
		}
	}
}

// TestStorageEnvErrors: a failure of the store answers the errno
// call.errno maps it to, with its message; an injected crash traps.
func TestStorageEnvErrors(t *testing.T) {
	d := newHostileDriver(t)
	keys := abi.AppendKeys(nil, []string{"a"})
	kvs := abi.AppendKVs(nil, []abi.KV{{Key: "a", Value: []byte("1")}})
	opts := abi.AppendListOptions(nil, &abi.ListOptions{})
	d.write(t, offData, keys)
	d.write(t, offData+0x100, kvs)
	d.write(t, offData+0x200, opts)
	io := abi.ErrnoIO
	checkEnvErrors(t, d, io, "storage_get", offKey, 1, buf, 16)
	checkEnvErrors(t, d, io, "storage_get_multi", offData, uint64(len(keys)), buf, 16)
	checkEnvErrors(t, d, io, "storage_put", offKey, 1, offVal, 1, 0)
	checkEnvErrors(t, d, io, "storage_put_multi", offData+0x100, uint64(len(kvs)), 0)
	checkEnvErrors(t, d, io, "storage_delete", offKey, 1)
	checkEnvErrors(t, d, io, "storage_delete_multi", offData, uint64(len(keys)))
	checkEnvErrors(t, d, io, "storage_list", offData+0x200, uint64(len(opts)), buf, 16)
	checkEnvErrors(t, d, io, "storage_delete_all")
}

// TestStorageDoesNotAmplify: a guest cannot make a storage function
// allocate much more than the ABI limits allow, however large the argument
// it points at.
func TestStorageDoesNotAmplify(t *testing.T) {
	emptyKeys := append(le32(4<<20-1), make([]byte, 16<<20-4)...)
	checkNoAmplify(t, []amplifyCase{
		{"put a 16 MiB value", nil, abi.FnStoragePut, []uint64{amplifyAt, 1, amplifyAt, amplifyBig, 0}, eTooLarge},
		{"put a 16 MiB key", nil, abi.FnStoragePut, []uint64{amplifyAt, amplifyBig, amplifyAt, 1, 0}, eTooLarge},
		{"delete a 16 MiB key", nil, abi.FnStorageDelete, []uint64{amplifyAt, amplifyBig}, eTooLarge},
		{"get 4M empty keys", emptyKeys, abi.FnStorageGetMulti, []uint64{amplifyAt, amplifyBig, 0, 0}, eTooLarge},
		{"delete 4M empty keys", emptyKeys, abi.FnStorageDeleteMulti, []uint64{amplifyAt, amplifyBig}, eTooLarge},
		{"put 2M empty entries", emptyKeys, abi.FnStoragePutMulti, []uint64{amplifyAt, amplifyBig, 0}, eTooLarge},
		{"list with 16 MiB of options", nil, abi.FnStorageList, []uint64{amplifyAt, amplifyBig, 0, 0}, eTooLarge},
	})
}

// groupFunctions lists the host functions abi.FunctionGroups puts in
// group, sorted.
func groupFunctions(group string) []string {
	var names []string
	for name, g := range abi.FunctionGroups {
		if g == group {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// hostFuncByName returns the declaration of a host function.
func hostFuncByName(t *testing.T, name string) hostFunc {
	t.Helper()
	i := slices.IndexFunc(hostFuncs(), func(hf hostFunc) bool { return hf.name == name })
	if i < 0 {
		t.Fatalf("no host function %s", name)
	}
	return hostFuncs()[i]
}
