package sdk

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi"
)

// SortableLen is the length of AppendSortable's encoding.
const SortableLen = 16

// AppendSortable appends v as SortableLen lowercase hex digits: a fixed
// width, so storage keys holding such numbers at the same place sort in
// numeric order.
func AppendSortable(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>uint(shift)&0xf])
	}
	return b
}

// ParseSortable decodes the SortableLen hex digits of AppendSortable.
func ParseSortable(s string) (uint64, bool) {
	if len(s) != SortableLen {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 16, 64)
	return v, err == nil
}

// ErrBadExpiryKey reports a key under an ExpiryIndex's prefix that
// ExpiryIndex.Key did not write.
var ErrBadExpiryKey = errors.New("sdk: malformed expiry index key")

// Sweep bounds: an entry takes two deletes and a multi-key call at most
// abi.MaxMultiKeys keys; sweepRounds bounds one call of Sweep.
const (
	sweepBatch  = abi.MaxMultiKeys / 2
	sweepRounds = 16
)

// ExpiryIndex keeps ids in shard storage in the order they expire: an
// empty value under "<Prefix><expiry in unix ms, AppendSortable><id>" per
// id, so the ids due are one range read ending at now and the next expiry
// is a one-key read. Write an id's entry in the same event as the record
// it expires, and set the alarm (ArmNext) for the earliest expiry.
type ExpiryIndex struct {
	Prefix string
}

// Key returns id's index key for an expiry at unix ms expires.
func (x ExpiryIndex) Key(expires int64, id string) string {
	b := make([]byte, 0, len(x.Prefix)+SortableLen+len(id))
	b = append(b, x.Prefix...)
	b = AppendSortable(b, uint64(expires))
	return string(append(b, id...))
}

// parse splits an index key into its expiry and id.
func (x ExpiryIndex) parse(key string) (int64, string, bool) {
	head := len(x.Prefix) + SortableLen
	if len(key) <= head || !strings.HasPrefix(key, x.Prefix) {
		return 0, "", false
	}
	at, ok := ParseSortable(key[len(x.Prefix):head])
	return int64(at), key[head:], ok
}

// Sweep deletes the entries due at unix ms now (expiry ≤ now), earliest
// first, each with the storage key record(id) names, and returns their
// ids. It deletes at most 1024 entries a call, in calls of 64; run it
// again (an alarm set for now) while more are due. Running it twice
// deletes nothing more.
func (x ExpiryIndex) Sweep(now int64, record func(id string) string) ([]string, error) {
	st := Storage()
	due := ListOptions{Prefix: x.Prefix, End: x.Key(now+1, ""), HasEnd: true, Limit: sweepBatch}
	var ids []string
	for range sweepRounds {
		kvs, err := st.List(due)
		if err != nil {
			return ids, err
		}
		keys := make([]string, 0, 2*len(kvs))
		for _, kv := range kvs {
			_, id, ok := x.parse(kv.Key)
			if !ok {
				return ids, ErrBadExpiryKey
			}
			keys = append(keys, kv.Key, record(id))
			ids = append(ids, id)
		}
		if len(keys) > 0 {
			if _, err := st.DeleteMulti(keys); err != nil {
				return ids, err
			}
		}
		if len(kvs) < sweepBatch {
			break
		}
	}
	return ids, nil
}

// ArmNext sets the shard's alarm for the earliest expiry in the index, if
// there is one (an alarm handler runs with the alarm cleared).
func (x ExpiryIndex) ArmNext() error {
	next, err := Storage().List(ListOptions{Prefix: x.Prefix, Limit: 1})
	if err != nil || len(next) == 0 {
		return err
	}
	at, _, ok := x.parse(next[0].Key)
	if !ok {
		return ErrBadExpiryKey
	}
	return SetAlarm(time.UnixMilli(at))
}
