package abi

import (
	"errors"
	"reflect"
	"testing"
)

// TestWSEventRoundTrip: an event decodes to what was encoded; a truncated
// or padded one is refused.
func TestWSEventRoundTrip(t *testing.T) {
	ev := &WSEvent{Kind: WSEventClose, Socket: 1<<40 + 3, Flags: WSClean, Code: 4000, Data: []byte("bye"), Tags: []string{"a", "bb"}, Attachment: []byte{0, 1}}
	b := AppendWSEvent(nil, ev)
	got, err := DecodeWSEvent(b)
	if err != nil || !reflect.DeepEqual(got, ev) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range [][]byte{b[:len(b)-1], append(append([]byte(nil), b...), 0), nil} {
		if _, err := DecodeWSEvent(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: %v, want ErrMalformed", len(bad), err)
		}
	}
}

// TestSocketsRoundTrip: a socket list decodes to what was encoded; a
// count larger than the bytes could hold is refused before allocating.
func TestSocketsRoundTrip(t *testing.T) {
	ss := []Socket{{ID: 1, Tags: []string{"x"}, Attachment: []byte("att")}, {ID: 2, Attachment: []byte{}}}
	got, err := DecodeSockets(AppendSockets(nil, ss))
	if err != nil || !reflect.DeepEqual(got, ss) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if _, err := DecodeSockets([]byte{0xff, 0xff, 0xff, 0x7f}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("huge count: %v", err)
	}
}
