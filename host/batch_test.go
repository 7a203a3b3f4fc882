package host_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// backlog queues reqs on shard name of binding behind a held shard, in
// order (each request is queued before the next is sent), then lets the
// shard run, and returns each request's answer (or error) in that order.
// mid, if set, is sent after request midAt: a control event queued
// between two requests.
func backlog(t *testing.T, ns *host.Namespace, name string, reqs []*abi.Request, midAt int, mid func()) ([]*abi.Response, []error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	release := make(chan struct{})
	held := make(chan struct{})
	go ns.Inspect(ctx, name, func(host.StorageView) { close(held); <-release })
	<-held
	resps := make([]*abi.Response, len(reqs))
	errs := make([]error, len(reqs))
	done := make(chan int, len(reqs)+1)
	queued := 0
	waitQueued := func(n int) {
		for deadline := time.Now().Add(10 * time.Second); ; {
			if depth(ns, name) >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue depth stayed below %d", n)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	for i, r := range reqs {
		go func() {
			resps[i], errs[i] = ns.FetchShard(ctx, name, r)
			done <- i
		}()
		queued++
		waitQueued(queued)
		if i == midAt && mid != nil {
			go func() { mid(); done <- -1 }()
			queued++
			waitQueued(queued)
		}
	}
	close(release)
	n := len(reqs)
	if mid != nil {
		n++
	}
	for range n {
		<-done
	}
	return resps, errs
}

func depth(ns *host.Namespace, name string) int {
	for _, s := range ns.Stats() {
		if s.Shard == name {
			return s.QueueDepth
		}
	}
	return 0
}

func increments(n int) []*abi.Request {
	reqs := make([]*abi.Request, n)
	for i := range reqs {
		reqs[i] = &abi.Request{Method: "POST", Path: "/increment"}
	}
	return reqs
}

// batchHost starts a host with the counter example under COUNTER, batches
// of at most batch requests, its metrics in reg.
func batchHost(t *testing.T, batch int, reg *prometheus.Registry) *host.Namespace {
	t.Helper()
	cfg := counterConfig(t, func(c *host.Config) {
		c.FetchBatch = batch
		c.Registerer = reg
		c.EventTimeout = 2 * time.Second
	})
	f := start(t, cfg)
	ns, ok := f.h.Namespace("COUNTER")
	if !ok {
		t.Fatal("no COUNTER")
	}
	return ns
}

// live starts the counter object's instance, so that it is running
// before a backlog forms.
func live(t *testing.T, ns *host.Namespace, name string) {
	t.Helper()
	if _, err := ns.FetchShard(context.Background(), name, &abi.Request{Method: "GET", Path: "/"}); err != nil {
		t.Fatal(err)
	}
}

func batchedTotal(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "edgeshard_fetch_batched_total" {
			var n float64
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
			return n
		}
	}
	return 0
}

// TestBatchDeliveryAnswersAsOneByOne: a backlog of increments on one
// object, with a restart (a control event) queued in the middle, gets the
// same answers in the same order from a host that batches (the counter
// example exports edgeshard_fetch_batch) as from one that delivers one
// by one; the batching host did batch, and the restart ended a batch in
// its place (the count carries over through storage).
func TestBatchDeliveryAnswersAsOneByOne(t *testing.T) {
	const n = 40
	var got [2][]string
	for i, batch := range []int{16, 1} {
		reg := prometheus.NewRegistry()
		ns := batchHost(t, batch, reg)
		live(t, ns, "c")
		resps, errs := backlog(t, ns, "c", increments(n), n/2, func() {
			if err := ns.Restart(context.Background(), "c"); err != nil {
				t.Error(err)
			}
		})
		for k := range resps {
			if errs[k] != nil || resps[k].Status != 200 {
				t.Fatalf("batch %d: request %d: %v %v", batch, k, resps[k], errs[k])
			}
			got[i] = append(got[i], string(resps[k].Body))
			if want := fmt.Sprintf(`{"count":%d,"version":"test"}`, k+1); got[i][k] != want {
				t.Fatalf("batch %d: request %d answered %s, want %s", batch, k, got[i][k], want)
			}
		}
		b := batchedTotal(t, reg)
		if batch > 1 && b < n/2 {
			t.Errorf("batching host delivered %v of %d requests in batches, want most", b, n)
		}
		if batch == 1 && b != 0 {
			t.Errorf("FetchBatch=1 delivered %v requests in batches", b)
		}
	}
}

// TestBatchFailureFailsOnlyItsRequest: a request that panics, or spins
// past the event deadline, in the middle of a batch fails alone, as it
// would on its own; the requests before it keep their committed answers
// and those after it run on a fresh instance, in order, as one-by-one
// delivery would give them (each request has its own deadline: the
// spinning one does not eat the others').
func TestBatchFailureFailsOnlyItsRequest(t *testing.T) {
	for _, tc := range []struct {
		path    string
		n, at   int
		wantErr error
	}{
		{"/panic", 10, 4, host.ErrTrap},
		{"/spin", 6, 3, host.ErrTimeout},
	} {
		t.Run(tc.path, func(t *testing.T) {
			ns := batchHost(t, 16, prometheus.NewRegistry())
			live(t, ns, "f")
			reqs := increments(tc.n)
			reqs[tc.at] = &abi.Request{Method: "POST", Path: tc.path}
			resps, errs := backlog(t, ns, "f", reqs, -1, nil)
			count := 0
			for k := range reqs {
				if k == tc.at {
					if !errors.Is(errs[k], tc.wantErr) {
						t.Fatalf("the failing request: %v %v, want %v", resps[k], errs[k], tc.wantErr)
					}
					continue
				}
				count++
				if errs[k] != nil {
					t.Fatalf("request %d: %v", k, errs[k])
				}
				if want := fmt.Sprintf(`{"count":%d,"version":"test"}`, count); string(resps[k].Body) != want {
					t.Fatalf("request %d answered %s, want %s", k, resps[k].Body, want)
				}
			}
		})
	}
}

// TestBatchOldPluginDeliveredOneByOne: a module without
// edgeshard_fetch_batch (the WAT counter, written against ABI v1 before
// batch delivery) under the same backlog answers every request, in
// order, one by one.
func TestBatchOldPluginDeliveredOneByOne(t *testing.T) {
	wasm := filepath.Join(t.TempDir(), "wat-counter.wasm")
	testutil.Wat2Wasm(t, wasm, filepath.Join(testutil.RepoRoot(), "examples/wat-counter/counter.wat"))
	reg := prometheus.NewRegistry()
	cfg := testutil.HostConfig(t, harness.Bindings(host.Binding{Name: "WAT", Module: wasm}))
	cfg.Registerer = reg
	f := start(t, cfg)
	ns, _ := f.h.Namespace("WAT")
	reqs := make([]*abi.Request, 30)
	for i := range reqs {
		reqs[i] = &abi.Request{Method: "POST", Path: "/"}
	}
	resps, errs := backlog(t, ns, "w", reqs, -1, nil)
	for k := range reqs {
		if errs[k] != nil || resps[k].Status != 200 || string(resps[k].Body) != fmt.Sprint(k+1) {
			t.Fatalf("request %d: %v %v, want %d", k, resps[k], errs[k], k+1)
		}
	}
	if b := batchedTotal(t, reg); b != 0 {
		t.Fatalf("%v requests of a module without the export were batched", b)
	}
}

// TestBatchMemoryFlat: the guest's linear memory after many batches is
// what it was after the first few.
func TestBatchMemoryFlat(t *testing.T) {
	ns := batchHost(t, 16, prometheus.NewRegistry())
	mem := func() uint64 {
		for _, s := range ns.Stats() {
			if s.Shard == "m" {
				return s.MemoryBytes
			}
		}
		return 0
	}
	var first uint64
	for round := range 30 {
		_, errs := backlog(t, ns, "m", increments(32), -1, nil)
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if round == 4 {
			first = mem()
		}
	}
	if last := mem(); last > first+1<<20 {
		t.Fatalf("guest memory grew from %d to %d bytes over 25 rounds of batches", first, last)
	}
}

// afterLastAnswerPlugin is wasmtest.Plugin whose edgeshard_fetch_batch
// answers two requests with "ok", then writes key "k" — in no request's
// event — and then returns 2, or traps when trap is set.
func afterLastAnswerPlugin(trap bool) []byte {
	const kv = 0x200 // "k", also the value
	m := wasmtest.Plugin()
	respond := m.AddImport(wasmtest.HostImport(abi.FnFetchRespond))
	put := m.AddImport(wasmtest.HostImport(abi.FnStoragePut))
	m.Data = append(m.Data, wasmtest.Data{Offset: kv, Bytes: []byte("k")})
	drop := wasmtest.Op(0x1a)
	answer := wasmtest.Code(wasmtest.I32Const(wasmtest.RespOK), wasmtest.I32Const(int32(len(wasmtest.OKResponse))), wasmtest.Call(respond), drop)
	end := wasmtest.I32Const(2)
	if trap {
		end = wasmtest.Op(wasmtest.OpUnreachable)
	}
	m.SetExport(abi.ExportFetchBatch, wasmtest.Func{
		Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32},
		Body: wasmtest.Code(answer, answer,
			wasmtest.I32Const(kv), wasmtest.I32Const(1), wasmtest.I32Const(kv), wasmtest.I32Const(1), wasmtest.I32Const(0),
			wasmtest.Call(put), drop,
			end),
	})
	return m.Bytes()
}

// TestBatchAfterTheLastAnswer: what a guest does after answering the last
// request of a batch belongs to no request — a write then is dropped, not
// committed with the next event, and a trap then fails no request (both
// were answered) but discards the instance, which the next request
// restarts.
func TestBatchAfterTheLastAnswer(t *testing.T) {
	for _, trap := range []bool{false, true} {
		t.Run(fmt.Sprintf("trap=%v", trap), func(t *testing.T) {
			cfg := testutil.HostConfig(t, harness.Bindings(host.Binding{Name: "B", ModuleBytes: afterLastAnswerPlugin(trap)}))
			cfg.FetchBatch = 2
			f := start(t, cfg)
			ns, _ := f.h.Namespace("B")
			live(t, ns, "x")
			get := &abi.Request{Method: "GET", Path: "/"}
			resps, errs := backlog(t, ns, "x", []*abi.Request{get, get}, -1, nil)
			for k := range resps {
				if errs[k] != nil || string(resps[k].Body) != "ok" {
					t.Fatalf("request %d: %v %v", k, resps[k], errs[k])
				}
			}
			if resp, err := ns.FetchShard(context.Background(), "x", get); err != nil || string(resp.Body) != "ok" {
				t.Fatalf("the request after the batch: %v %v", resp, err)
			}
			var found bool
			if err := ns.Inspect(context.Background(), "x", func(v host.StorageView) { _, found, _ = v.Get("k") }); err != nil {
				t.Fatal(err)
			}
			if found {
				t.Fatal(`key "k", written after the batch's last answer, was committed`)
			}
		})
	}
}
