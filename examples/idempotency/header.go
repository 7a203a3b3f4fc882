package main

import (
	"strings"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

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
