package sdk

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk/internal/guestmem"
)

// Store is the shard's durable key/value storage. All writes of one event
// commit together when the event ends; the host releases the response only
// after they are durable (unless written with PutUnconfirmed).
//
// A write fails with errors.Is(err, abi.ErrnoLimit) once the event has
// written the host's per-event budget (16 MiB, 10,000 keys by default;
// overwrites count), and with abi.ErrnoQuota when it would grow a shard
// past its storage quota (1 GiB by default); either way it changes
// nothing (abi/ABI.md, section 5).
type Store struct{}

// Storage returns the shard's storage.
func Storage() Store { return Store{} }

// Get returns the value of key and whether it exists.
func (Store) Get(key string) ([]byte, bool, error) {
	p, c := scratchArgs()
	r := hostStorageGet(guestmem.String(key), uint32(len(key)), p, c)
	if r == -int64(abi.ErrnoNotFound) {
		return nil, false, nil
	}
	b, err := result("storage.get", r)
	if err != nil {
		return nil, false, err
	}
	return append([]byte(nil), b...), true, nil
}

// GetMulti returns the entries of the keys that exist (at most
// abi.MaxMultiKeys keys), in the order asked.
func (Store) GetMulti(keys []string) ([]abi.KV, error) {
	st.enc = abi.AppendKeys(st.enc[:0], keys)
	p, c := scratchArgs()
	b, err := result("storage.get_multi", hostStorageGetMulti(guestmem.Bytes(st.enc), uint32(len(st.enc)), p, c))
	if err != nil {
		return nil, err
	}
	return decodeKVsCopy(b)
}

// Put stores value under key.
func (Store) Put(key string, value []byte) error {
	return errnoErr("storage.put", hostStoragePut(guestmem.String(key), uint32(len(key)), guestmem.Bytes(value), uint32(len(value)), 0))
}

// PutUnconfirmed stores value under key without holding the response for
// its durability (Durable Objects' allowUnconfirmed). Use it only for data
// that may be lost in a crash, such as rate-limit windows.
func (Store) PutUnconfirmed(key string, value []byte) error {
	return errnoErr("storage.put", hostStoragePut(guestmem.String(key), uint32(len(key)), guestmem.Bytes(value), uint32(len(value)), abi.PutAllowUnconfirmed))
}

// PutMulti stores several entries (at most abi.MaxMultiKeys).
func (Store) PutMulti(kvs []abi.KV) error {
	st.enc = abi.AppendKVs(st.enc[:0], kvs)
	return errnoErr("storage.put_multi", hostStoragePutMulti(guestmem.Bytes(st.enc), uint32(len(st.enc)), 0))
}

// PutMultiUnconfirmed is PutMulti with allowUnconfirmed (see
// PutUnconfirmed).
func (Store) PutMultiUnconfirmed(kvs []abi.KV) error {
	st.enc = abi.AppendKVs(st.enc[:0], kvs)
	return errnoErr("storage.put_multi", hostStoragePutMulti(guestmem.Bytes(st.enc), uint32(len(st.enc)), abi.PutAllowUnconfirmed))
}

// Delete removes key and reports whether it existed.
func (Store) Delete(key string) (bool, error) {
	r := hostStorageDelete(guestmem.String(key), uint32(len(key)))
	if r < 0 {
		return false, errnoErr("storage.delete", r)
	}
	return r == 1, nil
}

// DeleteMulti removes several keys and returns how many existed.
func (Store) DeleteMulti(keys []string) (int, error) {
	st.enc = abi.AppendKeys(st.enc[:0], keys)
	r := hostStorageDeleteMulti(guestmem.Bytes(st.enc), uint32(len(st.enc)))
	if r < 0 {
		return 0, hostError("storage.delete_multi", abi.Errno(-r))
	}
	return int(r), nil
}

// ListOptions selects a key range; see abi.ListOptions.
type ListOptions = abi.ListOptions

// List returns the entries in the range, in key order (or reverse).
func (Store) List(opts ListOptions) ([]abi.KV, error) {
	st.enc = abi.AppendListOptions(st.enc[:0], &opts)
	p, c := scratchArgs()
	b, err := result("storage.list", hostStorageList(guestmem.Bytes(st.enc), uint32(len(st.enc)), p, c))
	if err != nil {
		return nil, err
	}
	return decodeKVsCopy(b)
}

// DeleteAll removes every key of the shard (not its alarm).
func (Store) DeleteAll() error {
	return errnoErr("storage.delete_all", hostStorageDeleteAll())
}

func decodeKVsCopy(b []byte) ([]abi.KV, error) {
	kvs, err := abi.DecodeKVs(b)
	if err != nil {
		return nil, &HostError{Errno: abi.ErrnoInternal, Op: "decode", Message: err.Error()}
	}
	for i := range kvs {
		kvs[i].Value = append([]byte(nil), kvs[i].Value...)
	}
	return kvs, nil
}
