// Package leb128 appends the LEB128 numbers of the WebAssembly binary
// format. It is the one encoder of the module rewriter (wasmbin) and of the
// modules tests assemble (wasmtest), which cannot import each other:
// wasmbin's own tests use wasmtest.
package leb128

// AppendUint appends v as unsigned LEB128.
func AppendUint(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// AppendInt appends v as signed LEB128.
func AppendInt(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
