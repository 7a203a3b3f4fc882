package wasm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
)

// Tests of the WebSocket host functions and of the optional export
// edgeshard_ws_event.

// wsFakeEnv is fakeEnv with sockets 7 and 8: it records what the guest
// asks and answers ErrNoSocket for any other id.
type wsFakeEnv struct {
	*fakeEnv
	accepted  bool
	sent      []string
	closed    []int
	att       []byte
	autoReq   string
	acceptErr error
}

func (e *wsFakeEnv) has(id uint64) error {
	if id != 7 && id != 8 {
		return ErrNoSocket
	}
	return nil
}

func (e *wsFakeEnv) WSAccept(tags []string, att []byte) (uint64, error) {
	if e.acceptErr != nil {
		return 0, e.acceptErr
	}
	e.accepted, e.att = true, att
	return 7, nil
}
func (e *wsFakeEnv) WSAccepted() bool { return e.accepted }
func (e *wsFakeEnv) WSSend(id uint64, binary bool, data []byte) error {
	if err := e.has(id); err != nil {
		return err
	}
	e.sent = append(e.sent, string(data))
	return nil
}
func (e *wsFakeEnv) WSBroadcast(tag string, binary bool, data []byte) (int, error) {
	e.sent = append(e.sent, tag+":"+string(data))
	return 2, nil
}
func (e *wsFakeEnv) WSClose(id uint64, code int, reason string) error {
	if err := e.has(id); err != nil {
		return err
	}
	e.closed = append(e.closed, code)
	return nil
}
func (e *wsFakeEnv) WSList(tag string) ([]abi.Socket, error) {
	return []abi.Socket{{ID: 7, Tags: []string{"a"}, Attachment: []byte("x")}, {ID: 8}}, nil
}
func (e *wsFakeEnv) WSSetAttachment(id uint64, att []byte) error {
	if err := e.has(id); err != nil {
		return err
	}
	e.att = att
	return nil
}
func (e *wsFakeEnv) WSSetAutoResponse(req, resp []byte) error {
	e.autoReq = string(req)
	return nil
}

// TestWSWithoutWebSocketEnv: an Env that cannot hold sockets answers
// "not granted" to the whole group.
func TestWSWithoutWebSocketEnv(t *testing.T) {
	d := newHostileDriver(t)
	runSteps(t, d, []step{
		{"accept", nil, abi.FnWSAccept, []uint64{0, 0, 0, 0}, eNotGranted, ""},
		{"send", nil, abi.FnWSSend, []uint64{7, 0, offVal, 1}, eNotGranted, ""},
		{"list", nil, abi.FnWSList, []uint64{0, 0, buf, 64}, eNotGranted, ""},
	})
}

// TestWSHostileArguments: every function checks flags, sizes, codes and
// encodings before the Env sees them, and answers the Env's ErrNoSocket
// with ErrnoNotFound.
func TestWSHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	env := &wsFakeEnv{fakeEnv: d.env}
	d.resetWith(env)
	tags := abi.AppendKeys(nil, []string{"red", "blue"})
	eLimit := -int64(abi.ErrnoLimit)
	tooMany := make([]string, abi.MaxWSTags+1)
	for i := range tooMany {
		tooMany[i] = "t"
	}
	manyTags := abi.AppendKeys(nil, tooMany)
	longTag := abi.AppendKeys(nil, []string{strings.Repeat("t", abi.MaxWSTagBytes+1)})
	emptyTag := abi.AppendKeys(nil, []string{""})
	D := uint64(offData)
	runSteps(t, d, []step{
		{"tags too many", manyTags, abi.FnWSAccept, []uint64{D, uint64(len(manyTags)), 0, 0}, eTooLarge, ""},
		{"tag too long", longTag, abi.FnWSAccept, []uint64{D, uint64(len(longTag)), 0, 0}, eTooLarge, ""},
		{"empty tag", emptyTag, abi.FnWSAccept, []uint64{D, uint64(len(emptyTag)), 0, 0}, eInvalid, ""},
		{"tags malformed", []byte{9, 0, 0, 0}, abi.FnWSAccept, []uint64{D, 4, 0, 0}, eInvalid, ""},
		{"attachment too large", nil, abi.FnWSAccept, []uint64{0, 0, offBig, abi.MaxWSAttachment + 1}, eTooLarge, ""},
		{"tags outside memory", nil, abi.FnWSAccept, []uint64{oob, 8, 0, 0}, eFault, ""},
		{"accept", tags, abi.FnWSAccept, []uint64{D, uint64(len(tags)), offVal, 1}, 7, ""},

		{"send flags", nil, abi.FnWSSend, []uint64{7, 2, offVal, 1}, eInvalid, ""},
		{"send to no socket", nil, abi.FnWSSend, []uint64{9, 0, offVal, 1}, eNotFound, ""},
		{"send outside memory", nil, abi.FnWSSend, []uint64{7, 0, oob, 1}, eFault, ""},
		{"send", nil, abi.FnWSSend, []uint64{7, uint64(abi.WSBinary), offVal, 1}, 0, ""},

		{"broadcast tag too long", nil, abi.FnWSBroadcast, []uint64{offBig, abi.MaxWSTagBytes + 1, 0, offVal, 1}, eTooLarge, ""},
		{"broadcast flags", nil, abi.FnWSBroadcast, []uint64{0, 0, 4, offVal, 1}, eInvalid, ""},
		{"broadcast", nil, abi.FnWSBroadcast, []uint64{offKey, 1, 0, offVal, 1}, 2, ""},

		{"close 1006", nil, abi.FnWSClose, []uint64{7, 1006, 0, 0}, eInvalid, ""},
		{"close 999", nil, abi.FnWSClose, []uint64{7, 999, 0, 0}, eInvalid, ""},
		{"close 5000", nil, abi.FnWSClose, []uint64{7, 5000, 0, 0}, eInvalid, ""},
		{"close reason too long", nil, abi.FnWSClose, []uint64{7, 1000, offBig, abi.MaxWSCloseReason + 1}, eTooLarge, ""},
		{"close no socket", nil, abi.FnWSClose, []uint64{9, 1000, 0, 0}, eNotFound, ""},
		{"close", nil, abi.FnWSClose, []uint64{8, 4000, offVal, 1}, 0, ""},

		{"attachment too large", nil, abi.FnWSSetAttachment, []uint64{7, offBig, abi.MaxWSAttachment + 1}, eTooLarge, ""},
		{"attachment no socket", nil, abi.FnWSSetAttachment, []uint64{9, offVal, 1}, eNotFound, ""},
		{"attachment", nil, abi.FnWSSetAttachment, []uint64{7, offKey, 1}, 0, ""},

		{"auto-response without request", nil, abi.FnWSSetAutoResponse, []uint64{0, 0, offVal, 1}, eInvalid, ""},
		{"auto-response too large", nil, abi.FnWSSetAutoResponse, []uint64{offBig, abi.MaxWSAutoResponse + 1, 0, 0}, eTooLarge, ""},
		{"auto-response", nil, abi.FnWSSetAutoResponse, []uint64{offKey, 1, offVal, 1}, 0, ""},
	})
	if !env.accepted || string(env.att) != "k" || env.autoReq != "k" {
		t.Fatalf("env saw accepted=%v att=%q auto=%q", env.accepted, env.att, env.autoReq)
	}
	if strings.Join(env.sent, "|") != "v|k:v" || len(env.closed) != 1 || env.closed[0] != 4000 {
		t.Fatalf("env saw sends %q closes %v", env.sent, env.closed)
	}
	list := abi.AppendSockets(nil, []abi.Socket{{ID: 7, Tags: []string{"a"}, Attachment: []byte("x")}, {ID: 8}})
	runSteps(t, d, heldSteps("list", nil, abi.FnWSList, []uint64{0, 0}, list, 4))
	env.acceptErr = &CallError{Errno: abi.ErrnoLimit, Err: errors.New("the shard holds the most sockets")}
	runSteps(t, d, []step{{"accept past the limit", nil, abi.FnWSAccept, []uint64{0, 0, 0, 0}, eLimit, ""}})
	if d.c.errMsg != "the shard holds the most sockets" {
		t.Fatalf("error_message: %q", d.c.errMsg)
	}
}

// wsEventPlugin is Plugin exporting edgeshard_ws_event with params and
// results, returning 0 (or 5 when it has a result).
func wsEventPlugin(params, results []wasmtest.ValType) []byte {
	m := wasmtest.Plugin()
	var body []byte
	if len(results) > 0 {
		body = wasmtest.I32Const(0)
	}
	m.SetExport(abi.ExportWSEvent, wasmtest.Func{Params: params, Results: results, Body: body})
	return m.Bytes()
}

// TestWSEventExport: a module without edgeshard_ws_event loads and has no
// WebSockets; one with it does, and handles an event; one with another
// signature is refused at load, naming the export.
func TestWSEventExport(t *testing.T) {
	eng := newTestEngine(t, Config{})
	ctx := context.Background()
	plain, err := eng.Load(ctx, wasmtest.Plugin().Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close(ctx)
	if plain.WebSockets {
		t.Fatal("a module without the export has WebSockets")
	}
	I32 := wasmtest.I32
	m, err := eng.Load(ctx, wsEventPlugin([]wasmtest.ValType{I32, I32}, []wasmtest.ValType{I32}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	if !m.WebSockets {
		t.Fatal("a module with the export has no WebSockets")
	}
	inst, err := m.Instantiate(ctx, InstanceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	ok, err := inst.WSEvent(ctx, newFakeEnv(t), &abi.WSEvent{Kind: abi.WSEventMessage, Socket: 3, Data: []byte("hi"), Tags: []string{"a"}})
	if err != nil || !ok {
		t.Fatalf("WSEvent: %v %v", ok, err)
	}
	_, err = eng.Load(ctx, wsEventPlugin([]wasmtest.ValType{I32}, []wasmtest.ValType{I32}), nil)
	if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), abi.ExportWSEvent) {
		t.Fatalf("wrong signature: %v", err)
	}
}

// TestStatus101NeedsAccept: a fetch answering 101 without ws_accept is a
// bad response, as any 1xx.
func TestStatus101NeedsAccept(t *testing.T) {
	eng := newTestEngine(t, Config{})
	ctx := context.Background()
	m := wasmtest.Plugin()
	resp := wasmtest.EncodeResponse(101, 0, nil)
	m.Data = append(m.Data, wasmtest.Data{Offset: 0x8000, Bytes: resp})
	m.SetExport(abi.ExportFetch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I64},
		Body: wasmtest.I64Const(wasmtest.Packed(0x8000, uint32(len(resp))))})
	mod, err := eng.Load(ctx, m.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close(ctx)
	for _, accepted := range []bool{false, true} {
		inst, err := mod.Instantiate(ctx, InstanceConfig{})
		if err != nil {
			t.Fatal(err)
		}
		env := &wsFakeEnv{fakeEnv: newFakeEnv(t), accepted: accepted}
		r, err := inst.Fetch(ctx, env, &abi.Request{Method: "GET", Path: "/"})
		switch {
		case accepted && (err != nil || r.Status != 101):
			t.Fatalf("accepted: %v %v", r, err)
		case !accepted && !errors.Is(err, ErrBadResponse):
			t.Fatalf("not accepted: %v, want a bad response", err)
		}
		inst.Close(ctx)
	}
}

// wsTracingEnv is wsFakeEnv that records its traced host calls.
type wsTracingEnv struct {
	*wsFakeEnv
	callRecorder
}

// TestWSTrace: traced WebSocket calls show their sockets, tags and
// messages decoded.
func TestWSTrace(t *testing.T) {
	d := newHostileDriver(t)
	env := &wsTracingEnv{wsFakeEnv: &wsFakeEnv{fakeEnv: d.env}}
	d.resetWith(env)
	tags := abi.AppendKeys(nil, []string{"room:a"})
	D := uint64(offData)
	runSteps(t, d, []step{
		{"accept", tags, abi.FnWSAccept, []uint64{D, uint64(len(tags)), offVal, 1}, 7, ""},
		{"send", nil, abi.FnWSSend, []uint64{7, 0, offVal, 1}, 0, ""},
		{"broadcast", nil, abi.FnWSBroadcast, []uint64{offKey, 1, uint64(abi.WSBinary), offVal, 1}, 2, ""},
		{"close", nil, abi.FnWSClose, []uint64{7, 4000, offKey, 1}, 0, ""},
		{"list", nil, abi.FnWSList, []uint64{0, 0, buf, 256}, 42, ""},
	})
	want := []string{
		`ws_accept 1 key ["room:a"] attachment=1 byte "v" → socket=7`,
		`ws_send socket=7 text 1 byte "v" → ok`,
		`ws_broadcast tag="k" binary 1 byte "v" → 2 sockets`,
		`ws_close socket=7 code=4000 reason="k" → ok`,
		`ws_list all → 2 sockets`,
	}
	if len(env.calls) != len(want) {
		t.Fatalf("%d calls traced, want %d", len(env.calls), len(want))
	}
	for i, w := range want {
		if got := env.calls[i].String(); got != w {
			t.Errorf("call %d: %q, want %q", i, got, w)
		}
	}
}
