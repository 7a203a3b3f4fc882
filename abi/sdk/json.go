package sdk

import (
	"strconv"
	"unicode/utf8"
)

// JSON responses are built by appending to a byte slice: encoding/json's
// reflection costs more than the rest of a request inside a Go guest. The
// edge API's plugins and the examples build every answer with these.

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s to b as a JSON string literal. Invalid UTF-8 is
// replaced by U+FFFD; U+2028 and U+2029 are escaped.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendJSONField appends `"name":` to b, preceded by a comma unless b ends
// with '{' or '['.
func AppendJSONField(b []byte, name string) []byte {
	if n := len(b); n > 0 && b[n-1] != '{' && b[n-1] != '[' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

// AppendJSONInt appends `"name":v`.
func AppendJSONInt(b []byte, name string, v int64) []byte {
	return strconv.AppendInt(AppendJSONField(b, name), v, 10)
}

// AppendJSONBool appends `"name":v`.
func AppendJSONBool(b []byte, name string, v bool) []byte {
	return strconv.AppendBool(AppendJSONField(b, name), v)
}

// AppendJSONStr appends `"name":"v"`.
func AppendJSONStr(b []byte, name, v string) []byte {
	return AppendJSONString(AppendJSONField(b, name), v)
}
