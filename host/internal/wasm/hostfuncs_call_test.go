package wasm

import (
	"reflect"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// Tests of the call host function, shard_call.

// TestShardCallHostileArguments: shard_call answers bad arguments with an
// errno, before the Env sees them.
func TestShardCallHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	valid := abi.AppendCallRequest(nil, &abi.CallRequest{Binding: "B", Key: "k", Request: abi.Request{Method: "GET", Path: "/"}})
	runSteps(t, d, []step{
		{"request past memory", nil, abi.FnShardCall, []uint64{oob, 4, buf, 16}, eFault, ""},
		{"request over the cap", nil, abi.FnShardCall, []uint64{0, abi.MaxOutboundRequest + 1, buf, 16}, eTooLarge, ""},
		{"truncated request", valid, abi.FnShardCall, []uint64{offData, uint64(len(valid) - 1), buf, 16}, eInvalid, ""},
		{"empty request", nil, abi.FnShardCall, []uint64{offData, 0, buf, 16}, eInvalid, ""},
		{"response into a buffer past memory", valid, abi.FnShardCall, []uint64{offData, uint64(len(valid)), oob, 1 << 20}, eFault, ""},
	})
	if d.env.lastCall != nil && d.env.lastCall.Binding != "B" {
		t.Fatalf("the Env saw %+v", d.env.lastCall)
	}
}

// TestShardCallResponse: the request reaches the Env decoded, its body a
// copy of guest memory; the response comes back encoded, held for
// result_take when it does not fit.
func TestShardCallResponse(t *testing.T) {
	d := newHostileDriver(t)
	cr := &abi.CallRequest{Binding: "ROOMS", Key: "lobby", Request: abi.Request{Method: "POST", Path: "/join?x=1", Header: []abi.Header{{Name: "A", Value: "1"}}, Body: []byte("alice")}}
	enc := abi.AppendCallRequest(nil, cr)
	want := abi.AppendResponse(nil, &abi.Response{Status: 200, Header: []abi.Header{{Name: "X-To", Value: "ROOMS/lobby"}}, Body: []byte("POST /join?x=1 alice")})
	runSteps(t, d, heldSteps("call", enc, abi.FnShardCall, []uint64{offData, uint64(len(enc))}, want, 4))
	if !reflect.DeepEqual(d.env.lastCall, cr) {
		t.Fatalf("the Env got %+v, want %+v", d.env.lastCall, cr)
	}
	d.write(t, offData, make([]byte, len(enc)))
	if string(d.env.lastCall.Body) != "alice" {
		t.Fatalf("the request body aliases guest memory: now %q", d.env.lastCall.Body)
	}
}

// TestShardCallEnvErrors: a failure of the Env answers its errno
// (ErrnoDeadlock, ErrnoDeadline… through CallError and the context
// errors) with its message; an injected crash traps.
func TestShardCallEnvErrors(t *testing.T) {
	d := newHostileDriver(t)
	enc := abi.AppendCallRequest(nil, &abi.CallRequest{Binding: "B", Key: "k", Request: abi.Request{Method: "GET", Path: "/"}})
	d.write(t, offData, enc)
	checkEnvErrors(t, d, abi.ErrnoIO, abi.FnShardCall, offData, uint64(len(enc)), buf, 16)
}

// TestOutboundTrace: a traced event shows shard_call and http_fetch
// decoded: whom it called, the request, the response's status and body.
func TestOutboundTrace(t *testing.T) {
	d := newHostileDriver(t)
	env := &tracingEnv{fakeEnv: d.env}
	d.resetWith(env)
	call := abi.AppendCallRequest(nil, &abi.CallRequest{Binding: "ROOMS", Key: "lobby", Request: abi.Request{Method: "POST", Path: "/join", Body: []byte("al")}})
	fetch := abi.AppendRequest(nil, &abi.Request{Method: "GET", Path: "https://api.example.com/x"})
	callResp := abi.AppendResponse(nil, &abi.Response{Status: 200, Header: []abi.Header{{Name: "X-To", Value: "ROOMS/lobby"}}, Body: []byte("POST /join al")})
	fetchResp := abi.AppendResponse(nil, &abi.Response{Status: 201, Body: []byte("GET https://api.example.com/x ")})
	for _, s := range []step{
		{"call", call, abi.FnShardCall, []uint64{offData, uint64(len(call)), buf, 256}, int64(len(callResp)), ""},
		{"fetch", fetch, abi.FnHTTPFetch, []uint64{offData, uint64(len(fetch)), buf, 8}, int64(len(fetchResp)), ""},
	} {
		d.write(t, offData, s.data)
		if got, err := d.call(s.fn, s.args...); err != nil || got != s.want {
			t.Fatalf("%s = %d, %v; want %d", s.name, got, err, s.want)
		}
	}
	want := []string{
		`shard_call ROOMS/"lobby" POST "/join" body=2 bytes "al" → status 200 body=13 bytes "POST /join al"`,
		`http_fetch GET "https://api.example.com/x" body=0 bytes → status 201 body=30 bytes "GET https://api.example.com/x " (held for result_take, cap 8)`,
	}
	for i, c := range env.calls {
		if c.String() != want[i] {
			t.Errorf("trace %d: %s\nwant %s", i, c.String(), want[i])
		}
	}
}
