package wasm

import (
	"encoding/binary"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Storage host functions (group "storage"). Keys are at most
// abi.MaxKeySize bytes, values abi.MaxValueSize, multi-key calls at most
// abi.MaxMultiKeys keys; a breach answers -ErrnoTooLarge and changes nothing.
// Sizes are checked before anything is copied or decoded, so a guest cannot
// make the host allocate far more than the limits allow.

const (
	// maxKeysBytes is the largest encoded Keys a multi-key call can need.
	maxKeysBytes = 4 + abi.MaxMultiKeys*(4+abi.MaxKeySize)
	// maxKVsBytes is the largest encoded KVs storage_put_multi can need.
	maxKVsBytes = 4 + abi.MaxMultiKeys*(8+abi.MaxKeySize+abi.MaxValueSize)
	// maxListOptsBytes bounds encoded ListOptions (four strings of about
	// a key each, with room for bounds a little past the longest key).
	maxListOptsBytes = 64 << 10
)

// tooLarge answers -ErrnoTooLarge with a message for error_message.
func (c *call) tooLarge(s []uint64, format string, args ...any) {
	c.errMsg = fmt.Sprintf(format, args...)
	s[0] = neg(abi.ErrnoTooLarge)
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

func (c *call) store(s []uint64) Store {
	if st := c.env.Store(); st != nil {
		return st
	}
	c.errMsg = "storage is not granted to this binding"
	s[0] = neg(abi.ErrnoNotGranted)
	return nil
}

// storage_get(key_ptr, key_len, buf, cap) -> i64: value length, or
// -ErrnoNotFound.
func storageGet(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil {
		return
	}
	key, ok := read(mod, u32(s[0]), u32(s[1]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if len(key) > abi.MaxKeySize {
		c.errMsg = "key exceeds 2048 bytes"
		s[0] = neg(abi.ErrnoTooLarge)
		return
	}
	v, found, err := st.Get(string(key))
	switch {
	case err != nil:
		s[0] = neg(c.errno(err))
	case !found:
		s[0] = neg(abi.ErrnoNotFound)
	default:
		s[0] = c.reply(mod, v, u32(s[2]), u32(s[3]))
	}
}

// storage_get_multi(keys_ptr, keys_len, buf, cap) -> i64: encoded KV list
// of the keys found, in request order.
func storageGetMulti(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil {
		return
	}
	raw, ok := read(mod, u32(s[0]), u32(s[1]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if c.multiTooLarge(s, raw, maxKeysBytes) {
		return
	}
	keys, err := abi.DecodeKeys(raw)
	if err != nil {
		c.errMsg = err.Error()
		s[0] = neg(abi.ErrnoInvalid)
		return
	}
	kvs, err := st.GetMulti(keys)
	if err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = c.reply(mod, abi.AppendKVs(nil, kvs), u32(s[2]), u32(s[3]))
}

// storage_put(key_ptr, key_len, val_ptr, val_len, flags) -> i32: 0 or
// -errno. flags: abi.PutAllowUnconfirmed.
func storagePut(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil {
		return
	}
	key, ok1 := read(mod, u32(s[0]), u32(s[1]))
	val, ok2 := read(mod, u32(s[2]), u32(s[3]))
	if !ok1 || !ok2 {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if len(key) > abi.MaxKeySize {
		c.tooLarge(s, "key of %d bytes exceeds %d", len(key), abi.MaxKeySize)
		return
	}
	if len(val) > abi.MaxValueSize {
		c.tooLarge(s, "value of %d bytes exceeds %d", len(val), abi.MaxValueSize)
		return
	}
	if err := st.Put(string(key), append([]byte(nil), val...), u32(s[4])&abi.PutAllowUnconfirmed != 0); err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = 0
}

// storage_put_multi(entries_ptr, entries_len, flags) -> i32.
func storagePutMulti(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil {
		return
	}
	raw, ok := read(mod, u32(s[0]), u32(s[1]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if c.multiTooLarge(s, raw, maxKVsBytes) {
		return
	}
	kvs, err := abi.DecodeKVs(raw)
	if err != nil {
		c.errMsg = err.Error()
		s[0] = neg(abi.ErrnoInvalid)
		return
	}
	for i := range kvs {
		kvs[i].Value = append([]byte(nil), kvs[i].Value...)
	}
	if err := st.PutMulti(kvs, u32(s[2])&abi.PutAllowUnconfirmed != 0); err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = 0
}

// storage_delete(key_ptr, key_len) -> i32: 1 if the key existed, 0 if not.
func storageDelete(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil {
		return
	}
	key, ok := read(mod, u32(s[0]), u32(s[1]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if len(key) > abi.MaxKeySize {
		c.tooLarge(s, "key of %d bytes exceeds %d", len(key), abi.MaxKeySize)
		return
	}
	existed, err := st.Delete(string(key))
	if err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	if existed {
		s[0] = 1
	} else {
		s[0] = 0
	}
}

// storage_delete_multi(keys_ptr, keys_len) -> i64: how many existed.
func storageDeleteMulti(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil {
		return
	}
	raw, ok := read(mod, u32(s[0]), u32(s[1]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if c.multiTooLarge(s, raw, maxKeysBytes) {
		return
	}
	keys, err := abi.DecodeKeys(raw)
	if err != nil {
		c.errMsg = err.Error()
		s[0] = neg(abi.ErrnoInvalid)
		return
	}
	n, err := st.DeleteMulti(keys)
	if err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = uint64(n)
}

// storage_list(opts_ptr, opts_len, buf, cap) -> i64: encoded KV list.
func storageList(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil {
		return
	}
	raw, ok := read(mod, u32(s[0]), u32(s[1]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if len(raw) > maxListOptsBytes {
		c.tooLarge(s, "list options of %d bytes exceed %d", len(raw), maxListOptsBytes)
		return
	}
	opts, err := abi.DecodeListOptions(raw)
	if err != nil {
		c.errMsg = err.Error()
		s[0] = neg(abi.ErrnoInvalid)
		return
	}
	kvs, err := st.List(opts)
	if err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = c.reply(mod, abi.AppendKVs(nil, kvs), u32(s[2]), u32(s[3]))
}

// storage_delete_all() -> i32.
func storageDeleteAll(c *call, mod api.Module, s []uint64) {
	st := c.store(s)
	if st == nil {
		return
	}
	if err := st.DeleteAll(); err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = 0
}
