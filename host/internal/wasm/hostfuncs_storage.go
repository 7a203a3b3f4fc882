package wasm

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Storage host functions (group "storage"). Keys are at most
// abi.MaxKeySize bytes, values abi.MaxValueSize, multi-key calls at most
// abi.MaxMultiKeys keys; a breach answers -ErrnoTooLarge and changes nothing.

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
