package host_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// TestRequestOverOneMiBDelivered: a request whose encoding exceeds 1 MiB
// reaches the guest whole. (The host drops such a request buffer after
// writing it instead of keeping it for the next request; it used to drop
// it before reading its length, and delivered the request as 0 bytes —
// a 400 "malformed request envelope" from the SDK.)
func TestRequestOverOneMiBDelivered(t *testing.T) {
	f := start(t, counterConfig(t, nil))
	body := bytes.Repeat([]byte("x"), 1<<20+1)
	resp, err := f.h.Fetch(context.Background(), "COUNTER", "big", &abi.Request{Method: "POST", Path: "/increment", Body: body})
	if err != nil || resp.Status != 200 {
		t.Fatalf("POST /increment with a %d-byte body: %v %v", len(body), resp, err)
	}
}
