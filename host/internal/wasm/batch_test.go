package wasm

import (
	"context"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
)

// TestFetchBatchExportSignatureChecked: the optional export, when
// present, must have its ABI signature; a module without it loads and
// does not batch.
func TestFetchBatchExportSignatureChecked(t *testing.T) {
	eng := newTestEngine(t, Config{})
	m := wasmtest.Plugin()
	m.SetExport(abi.ExportFetchBatch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}, Body: wasmtest.I32Const(0)})
	_, err := eng.Load(context.Background(), m.Bytes(), nil)
	if err == nil || !strings.Contains(err.Error(), `optional export "edgeshard_fetch_batch" has signature (i32, i32) -> (i32), ABI v1 needs (i32, i32, i32) -> (i32)`) {
		t.Fatalf("Load = %v, want the batch export's signature refused", err)
	}
	_, inst := startInstance(t, eng, wasmtest.Plugin().Bytes())
	if inst.CanBatch() {
		t.Fatal("a module without edgeshard_fetch_batch reports that it batches")
	}
	if _, err := inst.FetchBatch(context.Background(), nil, []*abi.Request{{Method: "GET", Path: "/"}}, nil); err == nil {
		t.Fatal("FetchBatch on a module without the export succeeded")
	}
}

// TestFetchRespondOutsideBatch: fetch_respond in an ordinary event answers
// -ErrnoInvalid with a message, and changes nothing.
func TestFetchRespondOutsideBatch(t *testing.T) {
	d := newHostileDriver(t)
	runSteps(t, d, []step{
		{"outside a batch", nil, abi.FnFetchRespond, []uint64{buf, 16}, eInvalid, ""},
		{"its message", nil, abi.FnErrorMessage, []uint64{buf, 64}, 64, "fetch_respond answers a request of edgeshard_fetch_batch; none "},
	})
}

// TestFetchBatchReturnsEarly: a guest that returns from
// edgeshard_fetch_batch without answering leaves the requests to its
// caller (answered 0, no error), and the instance stays usable.
func TestFetchBatchReturnsEarly(t *testing.T) {
	eng := newTestEngine(t, Config{})
	m := wasmtest.Plugin()
	m.SetExport(abi.ExportFetchBatch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}, Body: wasmtest.I32Const(0)})
	_, inst := startInstance(t, eng, m.Bytes())
	if !inst.CanBatch() {
		t.Fatal("the module exports edgeshard_fetch_batch, yet CanBatch is false")
	}
	reqs := []*abi.Request{{Method: "GET", Path: "/a"}, {Method: "GET", Path: "/b"}}
	n, err := inst.FetchBatch(context.Background(), newFakeEnv(t), reqs, func(int, *abi.Response) context.Context {
		t.Fatal("done called for a request the guest did not answer")
		return nil
	})
	if n != 0 || err != nil || inst.Err() != nil {
		t.Fatalf("FetchBatch = %d, %v (instance %v); want 0, nil and a live instance", n, err, inst.Err())
	}
}
