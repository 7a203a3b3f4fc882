package wasm

import (
	"reflect"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// Tests of the fetch host function, http_fetch. What the host does with
// the request (allowed hosts, the SSRF guard, timeouts, the size cap) is
// tested on the real host, in package host.

// TestHTTPFetchHostileArguments: http_fetch answers bad arguments with an
// errno, before the Env sees them.
func TestHTTPFetchHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	valid := abi.AppendRequest(nil, &abi.Request{Method: "GET", Path: "https://api.example.com/"})
	runSteps(t, d, []step{
		{"request past memory", nil, abi.FnHTTPFetch, []uint64{oob, 4, buf, 16}, eFault, ""},
		{"request over the cap", nil, abi.FnHTTPFetch, []uint64{0, abi.MaxOutboundRequest + 1, buf, 16}, eTooLarge, ""},
		{"truncated request", valid, abi.FnHTTPFetch, []uint64{offData, uint64(len(valid) - 1), buf, 16}, eInvalid, ""},
		{"response into a buffer past memory", valid, abi.FnHTTPFetch, []uint64{offData, uint64(len(valid)), oob, 1 << 20}, eFault, ""},
	})
}

// TestHTTPFetchResponse: the request reaches the Env decoded and the
// response comes back encoded, held for result_take when it does not fit.
func TestHTTPFetchResponse(t *testing.T) {
	d := newHostileDriver(t)
	req := &abi.Request{Method: "POST", Path: "https://api.example.com/hook", Header: []abi.Header{{Name: "Content-Type", Value: "text/plain"}}, Body: []byte("hi")}
	enc := abi.AppendRequest(nil, req)
	want := abi.AppendResponse(nil, &abi.Response{Status: 201, Body: []byte("POST https://api.example.com/hook hi")})
	runSteps(t, d, heldSteps("fetch", enc, abi.FnHTTPFetch, []uint64{offData, uint64(len(enc))}, want, 8))
	if !reflect.DeepEqual(d.env.lastFetch, req) {
		t.Fatalf("the Env got %+v, want %+v", d.env.lastFetch, req)
	}
}

// TestHTTPFetchEnvErrors: a failure of the Env answers its errno
// (ErrnoRefused, ErrnoNetwork… through CallError; ErrnoDeadline for a
// context deadline) with its message; an injected crash traps.
func TestHTTPFetchEnvErrors(t *testing.T) {
	d := newHostileDriver(t)
	enc := abi.AppendRequest(nil, &abi.Request{Method: "GET", Path: "https://api.example.com/"})
	d.write(t, offData, enc)
	checkEnvErrors(t, d, abi.ErrnoIO, abi.FnHTTPFetch, offData, uint64(len(enc)), buf, 16)
}
