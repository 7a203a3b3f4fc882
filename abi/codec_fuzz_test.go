package abi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// FuzzRoundTrip: any value of any message type, generated from the input,
// decodes from its encoding to an equal value that re-encodes to the same
// bytes.
func FuzzRoundTrip(f *testing.F) {
	for i := range kinds {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), bytes.Repeat([]byte{3, 1, 'x', 2, 0xff}, 20))
	}
	f.Fuzz(func(t *testing.T, sel uint8, seed []byte) {
		k := kinds[int(sel)%len(kinds)]
		roundTrip(t, k, k.gen(&gen{b: seed}))
	})
}

// decodeAllocFactor bounds what decoding may allocate per input byte: the
// worst case is a result row of one NULL (one input byte), which costs a
// 24-byte row slice header plus a 16-byte interface value.
const decodeAllocFactor = 64

// FuzzDecode: arbitrary bytes, decoded as any message type, never panic,
// allocate at most decodeAllocFactor bytes per input byte (plus a constant),
// and when they decode, they are the canonical encoding of what they decode
// to (ListOptions with flag bits the ABI does not define are refused, not
// decoded with those bits dropped).
func FuzzDecode(f *testing.F) {
	for i, k := range kinds {
		f.Add(uint8(i), k.encode(k.sample))
		f.Add(uint8(i), binary.LittleEndian.AppendUint32(nil, 0xffffffff))
	}
	f.Fuzz(func(t *testing.T, sel uint8, data []byte) {
		k := kinds[int(sel)%len(kinds)]
		var (
			v   any
			err error
		)
		got := allocBytes(func() { v, err = k.decode(data) })
		if limit := uint64(decodeAllocFactor*len(data) + 8192); got > limit {
			t.Fatalf("%s: decoding %d bytes allocated %d bytes (limit %d)", k.name, len(data), got, limit)
		}
		if err != nil {
			if !errors.Is(err, abi.ErrMalformed) {
				t.Fatalf("%s: error %v, want ErrMalformed", k.name, err)
			}
			return
		}
		if again := k.encode(v); !bytes.Equal(again, data) {
			t.Fatalf("%s: %x decodes to %#v, which encodes to %x", k.name, data, v, again)
		}
	})
}
