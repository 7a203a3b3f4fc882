package shardsql

import (
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

// redoVersion is the first byte of a redo record.
const redoVersion = 1

// Redo record flags.
const (
	redoDeleteAll = 1 << iota
	redoDelAlarm
)

// EncodeRedo encodes an event's key-value writes (its shard is not kept):
// version, flags, set-alarm time, then the puts and the deletes, in the
// abi codec.
func EncodeRedo(b storage.Batch) []byte {
	e := abi.Encoder{}
	e.U8(redoVersion)
	var flags byte
	if b.DeleteAll {
		flags |= redoDeleteAll
	}
	if b.DelAlarm {
		flags |= redoDelAlarm
	}
	e.U8(flags)
	e.U64(uint64(b.SetAlarm))
	e.U32(uint32(len(b.Puts)))
	for _, kv := range b.Puts {
		e.String(kv.Key)
		e.Bytes(kv.Value)
	}
	e.U32(uint32(len(b.Deletes)))
	for _, k := range b.Deletes {
		e.String(k)
	}
	return e.B
}

// ErrBadRedo reports a redo record that does not decode.
var ErrBadRedo = errors.New("malformed redo record")

// DecodeRedo decodes a record EncodeRedo made, for shard id.
func DecodeRedo(id storage.ShardID, raw []byte) (storage.Batch, error) {
	d := abi.NewDecoder(raw)
	if v := d.U8(); d.Err() == nil && v != redoVersion {
		return storage.Batch{}, fmt.Errorf("%w: version %d", ErrBadRedo, v)
	}
	flags := d.U8()
	b := storage.Batch{Shard: id, DeleteAll: flags&redoDeleteAll != 0, DelAlarm: flags&redoDelAlarm != 0}
	b.SetAlarm = int64(d.U64())
	n := d.Count(8)
	for i := 0; i < n && d.Err() == nil; i++ {
		b.Puts = append(b.Puts, abi.KV{Key: d.String(), Value: d.Bytes()})
	}
	n = d.Count(4)
	for i := 0; i < n && d.Err() == nil; i++ {
		b.Deletes = append(b.Deletes, d.String())
	}
	if err := d.Done(); err != nil {
		return storage.Batch{}, fmt.Errorf("%w: %w", ErrBadRedo, err)
	}
	return b, nil
}
