package wasm

import (
	"encoding/binary"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Storage host functions (group "storage"): the shard's key-value store,
// reached through Env.Store. Keys are at most abi.MaxKeySize bytes, values
// abi.MaxValueSize, multi-key calls at most abi.MaxMultiKeys keys; a breach
// answers -ErrnoTooLarge and changes nothing. Sizes are checked before
// anything is copied or decoded, so a guest cannot make the host allocate
// far more than the limits allow. Every function answers -ErrnoNotGranted
// ("storage is not granted to this binding") when the Env has no Store.
// Encodings (Keys, KVs, ListOptions) are those of abi/ABI.md section 6.
//
// Writes (puts and deletes) are charged to the event's budget
// (EventLimits.WriteBytes and WriteKeys): one over it answers -ErrnoLimit
// and changes nothing. The Store may refuse a write with its own errno
// (the host's storage quota answers -ErrnoQuota).

// storageFuncs are the host functions of group "storage".
var storageFuncs = []hostFunc{
	storageGet, storageGetMulti, storagePut, storagePutMulti,
	storageDelete, storageDeleteMulti, storageList, storageDeleteAll,
}

const (
	// maxKeysBytes is the largest encoded Keys a multi-key call can need.
	maxKeysBytes = 4 + abi.MaxMultiKeys*(4+abi.MaxKeySize)
	// maxKVsBytes is the largest encoded KVs storage_put_multi can need.
	maxKVsBytes = 4 + abi.MaxMultiKeys*(8+abi.MaxKeySize+abi.MaxValueSize)
	// maxListOptsBytes bounds encoded ListOptions (four strings of about
	// a key each, with room for bounds a little past the longest key).
	maxListOptsBytes = 64 << 10
)

// store returns the event's Store, or answers -ErrnoNotGranted.
func (c *call) store(s []uint64) Store {
	if st := c.env.Store(); st != nil {
		return st
	}
	c.fail(s, abi.ErrnoNotGranted, "storage is not granted to this binding")
	return nil
}

// storeArg is the start of most storage calls: the Store, then the bytes
// of the (ptr, len) parameter pair s[0], s[1] (a key, encoded keys or
// options). When it reports false it has answered the errno.
func (c *call) storeArg(mod api.Module, s []uint64) (Store, []byte, bool) {
	st := c.store(s)
	if st == nil {
		return nil, nil, false
	}
	b, ok := arg(mod, s, 0)
	return st, b, ok
}

// keyTooLarge answers -ErrnoTooLarge for a key over abi.MaxKeySize.
func (c *call) keyTooLarge(s []uint64, key []byte) bool {
	if len(key) > abi.MaxKeySize {
		c.tooLarge(s, "key of %d bytes exceeds %d", len(key), abi.MaxKeySize)
		return true
	}
	return false
}

// multiTooLarge checks an encoded Keys or KVs argument against its byte
// limit and its count (the leading u32) against abi.MaxMultiKeys.
func (c *call) multiTooLarge(s []uint64, raw []byte, maxBytes int) bool {
	if len(raw) > maxBytes {
		c.tooLarge(s, "encoded keys of %d bytes exceed %d", len(raw), maxBytes)
		return true
	}
	if len(raw) >= 4 {
		if n := binary.LittleEndian.Uint32(raw); n > abi.MaxMultiKeys {
			c.tooLarge(s, "%d keys in one call, at most %d allowed", n, abi.MaxMultiKeys)
			return true
		}
	}
	return false
}

// multiArg is the start of a multi-key call: the Store, then the encoded
// Keys or KVs at (s[0], s[1]) checked by multiTooLarge (at most maxBytes)
// and decoded. When it reports false it has answered the errno.
func multiArg[T any](c *call, mod api.Module, s []uint64, maxBytes int, decode func([]byte) (T, error)) (Store, T, bool) {
	var v T
	st, raw, ok := c.storeArg(mod, s)
	if !ok || c.multiTooLarge(s, raw, maxBytes) {
		return nil, v, false
	}
	v, err := decode(raw)
	if c.invalid(s, err) {
		return nil, v, false
	}
	return st, v, true
}

// replyKVs answers the encoded kvs through the buffer (s[2], s[3]), or
// the errno of err.
func (c *call) replyKVs(mod api.Module, s []uint64, kvs []abi.KV, err error) {
	if err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = c.reply(mod, abi.AppendKVs(nil, kvs), u32(s[2]), u32(s[3]))
}

// putFlags reads the flags parameter s[i] of a put, answering
// -ErrnoInvalid for bits the ABI does not define.
func (c *call) putFlags(s []uint64, i int) (unconfirmed, ok bool) {
	f := u32(s[i])
	if extra := f &^ abi.PutFlags; extra != 0 {
		c.fail(s, abi.ErrnoInvalid, fmt.Sprintf("flags %#x: bits %#x are not defined (bit 0 is allowUnconfirmed)", f, extra))
		return false, false
	}
	return f&abi.PutAllowUnconfirmed != 0, true
}

// keysBytes is what a multi-key write of keys costs the event's budget.
func keysBytes(keys []string) int64 {
	n := 0
	for _, k := range keys {
		n += len(k)
	}
	return int64(n)
}

// storageGet is storage_get(key_ptr, key_len, buf, cap) -> i64: the value
// of one key.
//
// Parameters:
//   - key_ptr, key_len: the key;
//   - buf, cap: where the value goes (held for result_take past cap).
//
// Result: the value's length. Errnos: ErrnoNotFound when the key is
// absent; ErrnoFault when the key or the written buffer is outside memory;
// ErrnoTooLarge for a key over abi.MaxKeySize ("key exceeds 2048 bytes").
var storageGet = hostFunc{abi.FnStorageGet, storageGetFn, p(i32, i32, i32, i32), p(i64)}

func storageGetFn(c *call, mod api.Module, s []uint64) {
	st, key, ok := c.storeArg(mod, s)
	if !ok {
		return
	}
	if len(key) > abi.MaxKeySize {
		c.fail(s, abi.ErrnoTooLarge, "key exceeds 2048 bytes")
		return
	}
	if v, found, err := st.Get(string(key)); c.found(s, found, err) {
		s[0] = c.reply(mod, v, u32(s[2]), u32(s[3]))
	}
}

// storageGetMulti is storage_get_multi(keys_ptr, keys_len, buf, cap) ->
// i64: the values of several keys.
//
// Parameters:
//   - keys_ptr, keys_len: encoded Keys, at most abi.MaxMultiKeys;
//   - buf, cap: where the encoded KVs of the keys found go, in request
//     order (held for result_take past cap).
//
// Result: the encoded KVs' length. Errnos: ErrnoFault; ErrnoTooLarge for
// too many keys or more bytes than that many keys can need; ErrnoInvalid
// for malformed Keys.
var storageGetMulti = hostFunc{abi.FnStorageGetMulti, storageGetMultiFn, p(i32, i32, i32, i32), p(i64)}

func storageGetMultiFn(c *call, mod api.Module, s []uint64) {
	st, keys, ok := multiArg(c, mod, s, maxKeysBytes, abi.DecodeKeys)
	if !ok {
		return
	}
	kvs, err := st.GetMulti(keys)
	c.replyKVs(mod, s, kvs, err)
}

// storagePut is storage_put(key_ptr, key_len, val_ptr, val_len, flags) ->
// i32: writes one key.
//
// Parameters:
//   - key_ptr, key_len: the key;
//   - val_ptr, val_len: the value (copied);
//   - flags: abi.PutAllowUnconfirmed (bit 0): the event's response is not
//     held until the write is durable; any other bit answers ErrnoInvalid.
//
// Result: 0. Errnos: ErrnoFault when the key or the value is outside
// memory; ErrnoTooLarge for a key over abi.MaxKeySize or a value over
// abi.MaxValueSize; ErrnoInvalid for undefined flags; ErrnoLimit when the
// event's write budget is spent; ErrnoQuota (from the Store) when the
// shard's storage quota is full.
var storagePut = hostFunc{abi.FnStoragePut, storagePutFn, p(i32, i32, i32, i32, i32), p(i32)}

func storagePutFn(c *call, mod api.Module, s []uint64) {
	st, key, ok := c.storeArg(mod, s)
	if !ok {
		return
	}
	val, ok := arg(mod, s, 2)
	if !ok || c.keyTooLarge(s, key) {
		return
	}
	if len(val) > abi.MaxValueSize {
		c.tooLarge(s, "value of %d bytes exceeds %d", len(val), abi.MaxValueSize)
		return
	}
	unconfirmed, ok := c.putFlags(s, 4)
	n := int64(len(key) + len(val))
	if !ok || !c.spendWrite(s, abi.FnStoragePut, n, 1) {
		return
	}
	if err := st.Put(string(key), append([]byte(nil), val...), unconfirmed); err != nil {
		c.refundWrite(n, 1)
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = 0
}

// storagePutMulti is storage_put_multi(kvs_ptr, kvs_len, flags) -> i32:
// writes several keys at once.
//
// Parameters:
//   - kvs_ptr, kvs_len: encoded KVs, at most abi.MaxMultiKeys entries
//     (values copied);
//   - flags: as storage_put's.
//
// Result: 0. Errnos: ErrnoFault; ErrnoTooLarge for too many entries or
// more bytes than that many entries can need (and, from the store, a key
// or value over its limit); ErrnoInvalid for malformed KVs or undefined
// flags; ErrnoLimit and ErrnoQuota as storage_put's. All entries are
// written or none.
var storagePutMulti = hostFunc{abi.FnStoragePutMulti, storagePutMultiFn, p(i32, i32, i32), p(i32)}

func storagePutMultiFn(c *call, mod api.Module, s []uint64) {
	st, kvs, ok := multiArg(c, mod, s, maxKVsBytes, abi.DecodeKVs)
	if !ok {
		return
	}
	unconfirmed, ok := c.putFlags(s, 2)
	if !ok {
		return
	}
	n := int64(0)
	for i := range kvs {
		n += int64(len(kvs[i].Key) + len(kvs[i].Value))
	}
	if !c.spendWrite(s, abi.FnStoragePutMulti, n, int64(len(kvs))) {
		return
	}
	for i := range kvs {
		kvs[i].Value = append([]byte(nil), kvs[i].Value...)
	}
	if err := st.PutMulti(kvs, unconfirmed); err != nil {
		c.refundWrite(n, int64(len(kvs)))
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = 0
}

// storageDelete is storage_delete(key_ptr, key_len) -> i32: deletes one
// key.
//
// Parameters:
//   - key_ptr, key_len: the key.
//
// Result: 1 if the key existed, 0 if not. Errnos: ErrnoFault;
// ErrnoTooLarge for a key over abi.MaxKeySize; ErrnoLimit when the
// event's write budget is spent (a delete counts whether or not the key
// existed).
var storageDelete = hostFunc{abi.FnStorageDelete, storageDeleteFn, p(i32, i32), p(i32)}

func storageDeleteFn(c *call, mod api.Module, s []uint64) {
	st, key, ok := c.storeArg(mod, s)
	if !ok || c.keyTooLarge(s, key) || !c.spendWrite(s, abi.FnStorageDelete, int64(len(key)), 1) {
		return
	}
	existed, err := st.Delete(string(key))
	if err != nil {
		c.refundWrite(int64(len(key)), 1)
		s[0] = neg(c.errno(err))
		return
	}
	if existed {
		s[0] = 1
	} else {
		s[0] = 0
	}
}

// storageDeleteMulti is storage_delete_multi(keys_ptr, keys_len) -> i64:
// deletes several keys at once.
//
// Parameters:
//   - keys_ptr, keys_len: encoded Keys, at most abi.MaxMultiKeys.
//
// Result: how many of the keys existed. Errnos: as storage_get_multi's,
// and ErrnoLimit as storage_delete's.
var storageDeleteMulti = hostFunc{abi.FnStorageDeleteMulti, storageDeleteMultiFn, p(i32, i32), p(i64)}

func storageDeleteMultiFn(c *call, mod api.Module, s []uint64) {
	st, keys, ok := multiArg(c, mod, s, maxKeysBytes, abi.DecodeKeys)
	if !ok {
		return
	}
	kb, nk := keysBytes(keys), int64(len(keys))
	if !c.spendWrite(s, abi.FnStorageDeleteMulti, kb, nk) {
		return
	}
	n, err := st.DeleteMulti(keys)
	if err != nil {
		c.refundWrite(kb, nk)
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = uint64(n)
}

// storageList is storage_list(opts_ptr, opts_len, buf, cap) -> i64: the
// keys and values in a range, in key order (bytewise) or reverse.
//
// Parameters:
//   - opts_ptr, opts_len: encoded ListOptions (prefix, start or
//     startAfter, end, limit, reverse), at most 64 KiB;
//   - buf, cap: where the encoded KVs go (held for result_take past cap).
//
// Result: the encoded KVs' length. Errnos: ErrnoFault; ErrnoTooLarge for
// options over 64 KiB; ErrnoInvalid for malformed options or, from the
// store, both start and startAfter.
var storageList = hostFunc{abi.FnStorageList, storageListFn, p(i32, i32, i32, i32), p(i64)}

func storageListFn(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil {
		return
	}
	opts, ok := decodeArg(c, mod, s, 0, maxListOptsBytes, "encoded list options", abi.DecodeListOptions)
	if !ok {
		return
	}
	kvs, err := st.List(opts)
	c.replyKVs(mod, s, kvs, err)
}

// storageDeleteAll is storage_delete_all() -> i32: deletes every key of the
// shard (not its alarm).
//
// Result: 0. Errno: ErrnoLimit when the event's write budget is spent
// (it counts as one key of no bytes).
var storageDeleteAll = hostFunc{abi.FnStorageDeleteAll, storageDeleteAllFn, nil, p(i32)}

func storageDeleteAllFn(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil || !c.spendWrite(s, abi.FnStorageDeleteAll, 0, 1) {
		return
	}
	if err := st.DeleteAll(); err != nil {
		c.refundWrite(0, 1)
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = 0
}
