// Command garbage allocates many small, pointer-rich objects per request:
// the host's memory test uses it to prove a Go guest's heap stays flat.
package main

import (
	"strconv"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

type node struct {
	next *node
	val  []byte
	s    string
}

var keep *node

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: func(req *sdk.Request) *sdk.Response {
		var head *node
		for i := 0; i < 200; i++ {
			head = &node{next: head, val: make([]byte, 32), s: strconv.Itoa(i)}
		}
		keep = head.next.next // a little survives each call
		return sdk.Text(200, keep.s)
	}})
}
