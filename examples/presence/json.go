package main

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

// Responses are built by appending to a byte slice, as in examples/counter:
// encoding/json's reflection costs more than the rest of a request inside a
// Go guest. Requests, which are small, are decoded with encoding/json.

// appendString appends s as a JSON string, escaping what JSON requires and
// replacing invalid UTF-8 with U+FFFD.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

// appendField appends `"name":` after a comma unless it opens an object.
func appendField(b []byte, name string) []byte {
	if n := len(b); n > 0 && b[n-1] != '{' && b[n-1] != '[' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

// appendInt appends "name":n.
func appendInt(b []byte, name string, n int64) []byte {
	return strconv.AppendInt(appendField(b, name), n, 10)
}

// appendStr appends "name":"s".
func appendStr(b []byte, name, s string) []byte {
	return appendString(appendField(b, name), s)
}

// appendBool appends "name":v.
func appendBool(b []byte, name string, v bool) []byte {
	return strconv.AppendBool(appendField(b, name), v)
}

// header returns the first value of the named request header (names are
// case-insensitive), or "".
func header(h []sdk.Header, name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}
