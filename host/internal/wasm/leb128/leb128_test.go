package leb128

import (
	"bytes"
	"math"
	"testing"
)

// The encodings of the WebAssembly spec's examples and the edges of each
// width.
func TestAppend(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"0", AppendUint(nil, 0), []byte{0x00}},
		{"127", AppendUint(nil, 127), []byte{0x7f}},
		{"128", AppendUint(nil, 128), []byte{0x80, 0x01}},
		{"624485", AppendUint(nil, 624485), []byte{0xe5, 0x8e, 0x26}},
		{"MaxUint32", AppendUint(nil, math.MaxUint32), []byte{0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"MaxUint64", AppendUint(nil, math.MaxUint64), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"after bytes", AppendUint([]byte{0xaa}, 1), []byte{0xaa, 0x01}},
		{"signed 0", AppendInt(nil, 0), []byte{0x00}},
		{"signed 63", AppendInt(nil, 63), []byte{0x3f}},
		{"signed 64", AppendInt(nil, 64), []byte{0xc0, 0x00}},
		{"signed -1", AppendInt(nil, -1), []byte{0x7f}},
		{"signed -64", AppendInt(nil, -64), []byte{0x40}},
		{"signed -65", AppendInt(nil, -65), []byte{0xbf, 0x7f}},
		{"signed -123456", AppendInt(nil, -123456), []byte{0xc0, 0xbb, 0x78}},
		{"MinInt64", AppendInt(nil, math.MinInt64), []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f}},
		{"MaxInt64", AppendInt(nil, math.MaxInt64), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00}},
		{"signed after bytes", AppendInt([]byte{0xaa}, -2), []byte{0xaa, 0x7e}},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s: % x, want % x", c.name, c.got, c.want)
		}
	}
}
