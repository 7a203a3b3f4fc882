package host_test

// The hostile-plugin corpus: modules a host must refuse at load with an
// error that names the problem, and modules it must contain at run time
// with the right error and HTTP status, while the host and its other shards
// keep serving. Hand-made binaries (wasmtest) cover what a Go guest cannot
// express; Go guests in testdata/hostile cover runaway Go programs.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

var (
	i32 = wasmtest.I32
	i64 = wasmtest.I64
)

// mutated returns the minimal valid plugin changed by fn.
func mutated(fn func(m *wasmtest.Module)) []byte {
	m := wasmtest.Plugin()
	fn(m)
	return m.Bytes()
}

// withExport replaces one export of the minimal plugin.
func withExport(name string, f wasmtest.Func) []byte {
	return mutated(func(m *wasmtest.Module) { m.SetExport(name, f) })
}

// withImport adds an import (unused) to the minimal plugin.
func withImport(im wasmtest.FuncImport) []byte {
	return mutated(func(m *wasmtest.Module) { m.AddImport(im) })
}

// withStart gives the minimal plugin a wasm start function (run during
// instantiation, before _initialize).
func withStart(body []byte) []byte {
	return mutated(func(m *wasmtest.Module) {
		idx := uint32(len(m.Imports) + len(m.Funcs))
		m.Funcs = append(m.Funcs, wasmtest.Func{Body: body})
		m.Start = &idx
	})
}

func sig(params, results []wasmtest.ValType, body []byte) wasmtest.Func {
	return wasmtest.Func{Params: params, Results: results, Body: body}
}

func vt(ts ...wasmtest.ValType) []wasmtest.ValType { return ts }

type loadCase struct {
	name string
	bin  []byte
	want []string // substrings the refusal must contain
	// loops: the module never finishes starting; the load is bounded by a
	// short context deadline (the engine's own bound is tested in
	// host/internal/wasm, where it can be shortened).
	loops bool
}

func loadCases() []loadCase {
	valid := wasmtest.Plugin().Bytes()
	random := make([]byte, 4096)
	rand.New(rand.NewSource(7)).Read(random)
	wrongVersion := bytes.Clone(valid)
	wrongVersion[4] = 2
	wrongMagic := bytes.Clone(valid)
	wrongMagic[3] = 'n'
	callInit := func() []byte {
		return mutated(func(m *wasmtest.Module) {
			put := m.AddImport(wasmtest.HostImport(abi.FnStoragePut))
			m.SetExport(abi.ExportInit, sig(nil, vt(i32), wasmtest.Code(
				wasmtest.I32Const(0),
				wasmtest.I32Const(0), wasmtest.I32Const(1), wasmtest.I32Const(0), wasmtest.I32Const(1), wasmtest.I32Const(0),
				wasmtest.Call(put), []byte{0x6b}, // 0 - storage_put(...)
			)))
		})
	}
	exitIn := func(code int32) []byte {
		return mutated(func(m *wasmtest.Module) {
			exit := m.AddImport(wasmtest.ProcExit)
			m.SetExport(abi.ExportInitialize, sig(nil, nil, wasmtest.Code(wasmtest.I32Const(code), wasmtest.Call(exit))))
		})
	}
	cases := []loadCase{
		{name: "empty file", bin: []byte{}, want: []string{"empty module"}},
		{name: "random bytes", bin: random, want: []string{"not a WebAssembly binary"}},
		{name: "text file", bin: []byte("plugin = true\n"), want: []string{"not a WebAssembly binary"}},
		{name: "wrong magic", bin: wrongMagic, want: []string{"missing \\0asm magic"}},
		{name: "wrong binary version", bin: wrongVersion, want: []string{"compile:", "version"}},
		{name: "truncated module", bin: valid[:len(valid)/2], want: []string{"malformed binary: export section claims"}},
		{name: "trailing garbage", bin: append(bytes.Clone(valid), 0xff, 0xff, 0xff), want: []string{"malformed binary"}},
		{name: "section of 4 GiB", bin: append(bytes.Clone(valid[:8]), 1, 0xff, 0xff, 0xff, 0xff, 0x0f), want: []string{"malformed binary: type section claims 4294967295 bytes"}},
		{name: "2^32-1 imports", bin: append(bytes.Clone(valid[:8]), 2, 5, 0xff, 0xff, 0xff, 0xff, 0x0f), want: []string{"malformed binary: import section: 4294967295 elements claimed"}},
		{name: "table of 2^21 entries", bin: mutated(func(m *wasmtest.Module) { m.Tables = []wasmtest.Limits{{Min: 1 << 21, Max: -1}} }),
			want: []string{"table of 2097152 entries exceeds the limit of 1048576"}},
		{name: "header only", bin: valid[:8], want: []string{`missing export "edgeshard_abi_version"`}},
		{name: "over the size cap", bin: append(bytes.Clone(valid), make([]byte, 64<<20)...), want: []string{"the limit is 67108864"}},
		{name: "ABI version 2", bin: withExport(abi.ExportABIVersion, sig(nil, vt(i32), wasmtest.I32Const(2))), want: []string{"module speaks ABI version 2; this host implements version 1"}},
		{name: "ABI version 0", bin: withExport(abi.ExportABIVersion, sig(nil, vt(i32), wasmtest.I32Const(0))), want: []string{"ABI version 0;"}},
		{name: "ABI version -1", bin: withExport(abi.ExportABIVersion, sig(nil, vt(i32), wasmtest.I32Const(-1))), want: []string{"ABI version 4294967295;"}},
		{name: "no memory export", bin: mutated(func(m *wasmtest.Module) { m.MemoryExport = "" }), want: []string{`missing exported memory "memory"`}},
		{name: "memory exported under another name", bin: mutated(func(m *wasmtest.Module) { m.MemoryExport = "mem" }), want: []string{`missing exported memory "memory"`}},
		{name: "fetch returns i32", bin: withExport(abi.ExportFetch, sig(vt(i32, i32), vt(i32), wasmtest.I32Const(0))),
			want: []string{`export "edgeshard_fetch" has signature (i32, i32) -> (i32), ABI v1 needs (i32, i32) -> (i64)`}},
		{name: "fetch takes i64s", bin: withExport(abi.ExportFetch, sig(vt(i64, i64), vt(i64), wasmtest.I64Const(0))),
			want: []string{`export "edgeshard_fetch" has signature (i64, i64) -> (i64)`}},
		{name: "alloc takes nothing", bin: withExport(abi.ExportAlloc, sig(nil, vt(i32), wasmtest.I32Const(0))),
			want: []string{`export "edgeshard_alloc" has signature () -> (i32), ABI v1 needs (i32) -> (i32)`}},
		{name: "alarm returns nothing", bin: withExport(abi.ExportAlarm, sig(vt(i32), nil, nil)),
			want: []string{`export "edgeshard_alarm" has signature (i32) -> (), ABI v1 needs (i32) -> (i32)`}},
		{name: "abi version returns i64", bin: withExport(abi.ExportABIVersion, sig(nil, vt(i64), wasmtest.I64Const(1))),
			want: []string{`export "edgeshard_abi_version" has signature () -> (i64)`}},
		{name: "init takes an argument", bin: withExport(abi.ExportInit, sig(vt(i32), vt(i32), wasmtest.I32Const(0))),
			want: []string{`export "edgeshard_init" has signature (i32) -> (i32), ABI v1 needs () -> (i32)`}},
		{name: "_initialize returns a value", bin: withExport(abi.ExportInitialize, sig(nil, vt(i32), wasmtest.I32Const(0))),
			want: []string{`export "_initialize" has signature () -> (i32), ABI v1 needs () -> ()`}},
		{name: "unknown host function", bin: withImport(wasmtest.FuncImport{Module: "edgeshard", Name: "storage_get_all", Params: vt(i32, i32), Results: vt(i64)}),
			want: []string{"imports unknown host function edgeshard.storage_get_all (not in ABI v1)"}},
		{name: "host function with the wrong signature", bin: withImport(wasmtest.FuncImport{Module: "edgeshard", Name: "storage_get", Results: vt(i32)}),
			want: []string{"imports edgeshard.storage_get with signature () -> (i32), the host's is (i32, i32, i32, i32) -> (i64)"}},
		{name: "sql not granted", bin: withImport(wasmtest.HostImport(abi.FnSQLExec)),
			want: []string{`imports edgeshard.sql_exec but its binding does not grant "sql"`}},
		{name: "analytics not granted", bin: withImport(wasmtest.HostImport(abi.FnAnalyticsWrite)),
			want: []string{`imports edgeshard.analytics_write but its binding does not grant "analytics"`}},
		{name: "import from env", bin: withImport(wasmtest.FuncImport{Module: "env", Name: "abort", Params: vt(i32)}),
			want: []string{`imports env.abort: only modules "edgeshard" and "wasi_snapshot_preview1" may be imported`}},
		{name: "unknown WASI function", bin: withImport(wasmtest.FuncImport{Module: "wasi_snapshot_preview1", Name: "no_such_call"}),
			want: []string{"imports wasi_snapshot_preview1.no_such_call, which the host does not provide"}},
		{name: "imported memory", bin: mutated(func(m *wasmtest.Module) {
			m.Memory = nil
			m.ImportMemory = &wasmtest.FuncImport{Module: "env", Name: "memory"}
		}), want: []string{"imports a memory; a plugin must define and export its own"}},
		{name: "memory min above the cap", bin: mutated(func(m *wasmtest.Module) { m.Memory = &wasmtest.Limits{Min: 3000, Max: -1} }),
			want: []string{"compile:", "min 3000 pages", "over limit of 2048 pages"}},
		{name: "memory max above 4 GiB", bin: mutated(func(m *wasmtest.Module) { m.Memory = &wasmtest.Limits{Min: 1, Max: 70000} }),
			want: []string{"compile:", "70000"}},
		{name: "data segment outside memory", bin: mutated(func(m *wasmtest.Module) {
			m.Data = append(m.Data, wasmtest.Data{Offset: 2<<16 - 1, Bytes: []byte{1, 2}})
		}), want: []string{"instantiate:", "data"}},
		{name: "_initialize traps", bin: withExport(abi.ExportInitialize, sig(nil, nil, wasmtest.Op(wasmtest.OpUnreachable))),
			want: []string{"start (_initialize)", "plugin trapped", "unreachable"}},
		{name: "_initialize exits 1", bin: exitIn(1), want: []string{"start (_initialize)", "exited with code 1"}},
		{name: "_initialize exits 0", bin: exitIn(0), want: []string{"start (_initialize)", "exited with code 0 (a reactor must return, not exit)"}},
		{name: "start section traps", bin: withStart(wasmtest.Op(wasmtest.OpUnreachable)), want: []string{"start (start section)", "unreachable"}},
		{name: "init returns an errno", bin: withExport(abi.ExportInit, sig(nil, vt(i32), wasmtest.I32Const(2))),
			want: []string{"edgeshard_init returned errno 2 (invalid argument)"}},
		{name: "init calls a host function", bin: callInit(), want: []string{"edgeshard_init returned errno 5 (binding not granted)"}},
		{name: "start section loops", bin: withStart(wasmtest.Forever()), want: []string{"start (start section) did not return before the start deadline"}, loops: true},
		{name: "_initialize loops", bin: withExport(abi.ExportInitialize, sig(nil, nil, wasmtest.Forever())), want: []string{"start (_initialize) did not return before the start deadline"}, loops: true},
		{name: "abi version loops", bin: withExport(abi.ExportABIVersion, sig(nil, vt(i32), wasmtest.Forever())), want: []string{"edgeshard_abi_version did not return before the start deadline"}, loops: true},
		{name: "init loops", bin: withExport(abi.ExportInit, sig(nil, vt(i32), wasmtest.Forever())), want: []string{"edgeshard_init did not return before the start deadline"}, loops: true},
	}
	for _, name := range abi.RequiredExports {
		cases = append(cases, loadCase{
			name: "missing " + name,
			bin:  mutated(func(m *wasmtest.Module) { delete(m.Exports, name) }),
			want: []string{fmt.Sprintf("missing export %q", name)},
		})
	}
	return cases
}

func hostileConfig(t *testing.T, mutate func(*host.Config)) host.Config {
	return memoryConfig(t, func(c *host.Config) {
		c.Bindings = append(c.Bindings, host.Binding{Name: "VICTIM", ModuleBytes: wasmtest.Plugin().Bytes()})
		if mutate != nil {
			mutate(c)
		}
	})
}

// healthy asserts the host still serves: the counter shard counts on, and
// the VICTIM binding still answers with its minimal plugin.
type healthy struct {
	f *fixture
	n int
}

func (h *healthy) check(t *testing.T) {
	t.Helper()
	resp, err := h.f.call(t, "healthy", "POST", "/increment")
	if err != nil || resp.Status != 200 {
		t.Fatalf("healthy counter shard: %v %v", resp, err)
	}
	h.n++
	if got := h.f.count(t, "healthy"); got != h.n {
		t.Fatalf("healthy counter = %d, want %d", got, h.n)
	}
	if ns, ok := h.f.h.Namespace("VICTIM"); ok {
		resp, err := ns.Fetch(context.Background(), "v", &abi.Request{Method: "GET", Path: "/"})
		if err != nil || resp.Status != 200 || string(resp.Body) != "ok" {
			t.Fatalf("VICTIM after the hostile case: %v %v", resp, err)
		}
	}
}

// TestHostileModulesRefusedAtLoad: each module is refused, with an error
// naming the problem, by host.New (naming the binding), by ValidateModule
// and by a hot swap, after which the running host and its shards serve on.
func TestHostileModulesRefusedAtLoad(t *testing.T) {
	f := start(t, hostileConfig(t, nil))
	ok := &healthy{f: f}
	ok.check(t)
	victim, _ := f.h.Namespace("VICTIM")
	for _, tc := range loadCases() {
		t.Run(tc.name, func(t *testing.T) {
			timeout := time.Minute
			if tc.loops {
				timeout = 500 * time.Millisecond
			}
			assertRefused := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s accepted the module", what)
				}
				if !errors.Is(err, host.ErrInvalidModule) {
					t.Errorf("%s: %v does not wrap ErrInvalidModule", what, err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q does not contain %q", what, err, w)
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			cfg := testutil.HostConfig(t, harness.Memory(), harness.Bindings(host.Binding{Name: "EVIL", ModuleBytes: tc.bin}))
			h, err := host.New(ctx, cfg)
			if err == nil {
				h.Close(context.Background())
			}
			assertRefused("host.New", err)
			t.Logf("host.New: %v", err)
			if err != nil && !strings.Contains(err.Error(), `binding "EVIL"`) {
				t.Errorf("host.New error %q does not name the binding", err)
			}

			ctx, cancel = context.WithTimeout(context.Background(), timeout)
			defer cancel()
			_, err = host.ValidateModule(ctx, tc.bin, victim.Grants(), testutil.CacheDir())
			assertRefused("ValidateModule", err)

			ctx, cancel = context.WithTimeout(context.Background(), timeout)
			defer cancel()
			_, err = victim.Swap(ctx, tc.bin, "hostile")
			assertRefused("Swap", err)
			if err != nil && !strings.Contains(err.Error(), "the current version keeps serving") {
				t.Errorf("Swap error %q", err)
			}
			ok.check(t)
		})
	}
}

// runCase is a module that loads but misbehaves when called.
type runCase struct {
	name    string
	binding string // namespace serving the module
	path    string
	wantErr error // nil: a response is expected
	status  int   // HTTP status of the error (host.ErrorStatus) or of the response
	code    string
	msg     string             // substring of the error
	output  string             // substring of the guest output logged with the crash
	check   func([]byte) error // of the response body
}

type fakeSQL struct{}

func (fakeSQL) Batch(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	return make([]abi.Result, len(stmts)), nil
}

type fakeSink struct{}

func (fakeSink) Write(string, abi.DataPoint) error { return nil }

func fetchReturns(packed int64, data ...wasmtest.Data) []byte {
	return mutated(func(m *wasmtest.Module) {
		m.Data = append(m.Data, data...)
		m.SetExport(abi.ExportFetch, sig(vt(i32, i32), vt(i64), wasmtest.I64Const(packed)))
	})
}

// respAt returns a module whose fetch answers the bytes resp placed at 0x8000.
func respAt(resp []byte) []byte {
	return fetchReturns(wasmtest.Packed(0x8000, uint32(len(resp))), wasmtest.Data{Offset: 0x8000, Bytes: resp})
}

// Addresses in the pointer test's guest memory (two pages).
const (
	pS   = wasmtest.Scratch // result buffer
	pKey = 0x800            // "k"
	pVal = 0x810            // "v"
	pEnd = 2 << 16          // first address past memory
)

var pointerCalls = []struct {
	call wasmtest.HostCall
	want int64
}{
	{wasmtest.HostCall{Fn: abi.FnResultTake, Args: []int64{pS, 16}}, -int64(abi.ErrnoNoResult)},
	{wasmtest.HostCall{Fn: abi.FnStorageGet, Args: []int64{pEnd, 1, pS, 16}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnStorageGet, Args: []int64{-1, 2, pS, 16}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnStorageGet, Args: []int64{pKey, -1, pS, 16}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnStoragePut, Args: []int64{pKey, 1, pEnd - 1, 2, 0}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnStoragePut, Args: []int64{pKey, 1, pVal, 1, 0}}, 0},
	{wasmtest.HostCall{Fn: abi.FnStorageGet, Args: []int64{pKey, 1, pEnd, 16}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnStorageGet, Args: []int64{pKey, 1, pS, 0}}, 1},
	{wasmtest.HostCall{Fn: abi.FnResultTake, Args: []int64{pEnd, 16}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnResultTake, Args: []int64{pS, 16}}, 1},
	{wasmtest.HostCall{Fn: abi.FnStorageGetMulti, Args: []int64{-1, -1, pS, 16}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnStoragePutMulti, Args: []int64{pEnd, 4, 0}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnStorageDelete, Args: []int64{pEnd, 1}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnStorageDeleteMulti, Args: []int64{pEnd, 4}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnStorageList, Args: []int64{-1, -1, pS, 16}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnVarGet, Args: []int64{pEnd, 1, pS, 16}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnLogWrite, Args: []int64{3, pEnd, 1}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnSQLExec, Args: []int64{pEnd, 4, pS, 16}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnSQLExec, Args: []int64{0, abi.MaxSQLPayload + 1, pS, 16}}, -int64(abi.ErrnoTooLarge)},
	{wasmtest.HostCall{Fn: abi.FnAnalyticsWrite, Args: []int64{pEnd, 4}}, -int64(abi.ErrnoFault)},
	{wasmtest.HostCall{Fn: abi.FnAlarmSet, Args: []int64{math.MaxInt64}}, -int64(abi.ErrnoInvalid)},
	{wasmtest.HostCall{Fn: abi.FnAlarmSet, Args: []int64{-5}}, -int64(abi.ErrnoInvalid)},
	{wasmtest.HostCall{Fn: abi.FnErrorMessage, Args: []int64{pEnd, 100}}, -int64(abi.ErrnoFault)},
}

func pointerModule() []byte {
	var calls []wasmtest.HostCall
	for _, c := range pointerCalls {
		calls = append(calls, c.call)
	}
	m := wasmtest.CallsPlugin(calls)
	m.Data = append(m.Data, wasmtest.Data{Offset: pKey, Bytes: []byte("k")}, wasmtest.Data{Offset: pVal, Bytes: []byte("v")})
	return m.Bytes()
}

func checkPointerResults(body []byte) error {
	got := wasmtest.CallResults(body)
	if len(got) != len(pointerCalls) {
		return fmt.Errorf("%d results, want %d", len(got), len(pointerCalls))
	}
	var errs []error
	for i, c := range pointerCalls {
		if got[i] != c.want {
			errs = append(errs, fmt.Errorf("call %d %s%v = %d, want %d", i, c.call.Fn, c.call.Args, got[i], c.want))
		}
	}
	return errors.Join(errs...)
}

func bodyIs(want string) func([]byte) error {
	return func(b []byte) error {
		if string(b) != want {
			return fmt.Errorf("body %q, want %q", b, want)
		}
		return nil
	}
}

func runCases() (map[string][]byte, []runCase) {
	unreachable := wasmtest.Op(wasmtest.OpUnreachable)
	resp := func(status uint32) []byte { return wasmtest.EncodeResponse(status, 0, []byte("x")) }
	hugeHead := wasmtest.EncodeResponse(200, 0, nil)
	hugeHead[8], hugeHead[9], hugeHead[10], hugeHead[11] = 1, 0, 0, 2 // body length 32 MiB + 1
	modules := map[string][]byte{
		"TRAP":        withExport(abi.ExportFetch, sig(vt(i32, i32), vt(i64), unreachable)),
		"ALLOC_TRAPS": withExport(abi.ExportAlloc, sig(vt(i32), vt(i32), unreachable)),
		"ALLOC_OOB":   withExport(abi.ExportAlloc, sig(vt(i32), vt(i32), wasmtest.I32Const(-16))),
		"EXIT": mutated(func(m *wasmtest.Module) {
			exit := m.AddImport(wasmtest.ProcExit)
			m.SetExport(abi.ExportFetch, sig(vt(i32, i32), vt(i64), wasmtest.Code(wasmtest.I32Const(7), wasmtest.Call(exit), unreachable)))
		}),
		// Grow memory 16 MiB at a time until the cap refuses, then trap.
		"GROW": withExport(abi.ExportFetch, sig(vt(i32, i32), vt(i64), wasmtest.Code(wasmtest.Loop(
			wasmtest.I32Const(256), wasmtest.MemoryGrow(), wasmtest.I32Const(-1), wasmtest.Op(wasmtest.OpI32Eq),
			wasmtest.If(unreachable),
		), unreachable))),
		"RESP_OOB":        fetchReturns(wasmtest.Packed(pEnd-4, 12)),
		"RESP_LEN_MAX":    fetchReturns(wasmtest.Packed(0, math.MaxUint32)),
		"RESP_EMPTY":      fetchReturns(0),
		"RESP_TRAILING":   respAt(append(resp(200), 0)),
		"RESP_SHORT":      respAt(resp(200)[:5]),
		"RESP_HDR_COUNT":  respAt([]byte{200, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}),
		"RESP_BODY_COUNT": respAt([]byte{200, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f}),
		"STATUS_99":       respAt(resp(99)),
		"STATUS_600":      respAt(resp(600)),
		"STATUS_0":        respAt(resp(0)),
		"STATUS_MAX":      respAt(resp(math.MaxUint32)),
		"STATUS_100":      respAt(resp(100)),
		"STATUS_101":      respAt(resp(101)),
		"STATUS_199":      respAt(resp(199)),
		"STATUS_200":      respAt(resp(200)),
		"STATUS_599":      respAt(resp(599)),
		"HUGE_BODY": mutated(func(m *wasmtest.Module) {
			m.Memory = &wasmtest.Limits{Min: (12 + abi.MaxResponseBody + 1 + 0xffff) >> 16, Max: -1}
			m.Data = append(m.Data, wasmtest.Data{Offset: 0, Bytes: hugeHead})
			m.SetExport(abi.ExportFetch, sig(vt(i32, i32), vt(i64), wasmtest.I64Const(wasmtest.Packed(0, 12+abi.MaxResponseBody+1))))
		}),
		"POINTERS": pointerModule(),
	}
	trap := func(name, binding, path, msg string) runCase {
		return runCase{name: name, binding: binding, path: path, wantErr: host.ErrTrap, status: 500, code: "shard_crashed", msg: msg}
	}
	bad := func(name, binding, msg string) runCase {
		return runCase{name: name, binding: binding, path: "/", wantErr: host.ErrBadResponse, status: 502, code: "shard_bad_response", msg: msg}
	}
	withOutput := func(c runCase, output string) runCase { c.output = output; return c }
	cases := []runCase{
		trap("fetch traps", "TRAP", "/", "unreachable"),
		trap("alloc traps", "ALLOC_TRAPS", "/", "unreachable"),
		trap("alloc returns a pointer outside memory", "ALLOC_OOB", "/", "outside memory"),
		trap("fetch calls proc_exit", "EXIT", "/", "exited with code 7"),
		trap("fetch grows memory past the cap", "GROW", "/", "unreachable"),
		withOutput(trap("Go fetch allocates without bound", "RUNAWAY", "/alloc", "runtime.throw"), "fatal error: out of memory"),
		trap("Go fetch calls os.Exit", "RUNAWAY", "/exit", "exited with code 3"),
		bad("response pointer outside memory", "RESP_OOB", "outside memory"),
		bad("response length 2^32-1", "RESP_LEN_MAX", "exceeds the limit"),
		bad("empty response", "RESP_EMPTY", "malformed"),
		bad("response with trailing bytes", "RESP_TRAILING", "malformed"),
		bad("truncated response", "RESP_SHORT", "malformed"),
		bad("response claims 2^32-1 headers", "RESP_HDR_COUNT", "malformed"),
		bad("response body length past the end", "RESP_BODY_COUNT", "malformed"),
		bad("status 99", "STATUS_99", "status 99"),
		bad("status 600", "STATUS_600", "status 600"),
		bad("status 0", "STATUS_0", "status 0"),
		bad("status 2^32-1", "STATUS_MAX", "status 4294967295"),
		bad("response body over 32 MiB", "HUGE_BODY", "exceeds the limit"),
		bad("status 100 (an informational response)", "STATUS_100", "status 100 (want 200..599)"),
		bad("status 101 (a protocol switch)", "STATUS_101", "status 101"),
		bad("status 199", "STATUS_199", "status 199"),
		{name: "status 200", binding: "STATUS_200", path: "/", status: 200, check: bodyIs("x")},
		{name: "status 599", binding: "STATUS_599", path: "/", status: 599, check: bodyIs("x")},
		{name: "host functions given hostile pointers", binding: "POINTERS", path: "/", status: 200, check: checkPointerResults},
		{name: "Go guest calls result_take with nothing held", binding: "RUNAWAY", path: "/result-take", status: 200, check: bodyIs("-12")},
		{name: "Go guest passes pointers outside memory", binding: "RUNAWAY", path: "/pointers", status: 200, check: bodyIs("-11,-11,-11,-11,-11")},
	}
	return modules, cases
}

// runHostile starts a host serving the modules (and the healthy counter
// and VICTIM), then runs each case twice: the second request meets a fresh
// instance, so the shard recovers; after every request the healthy shards
// must still answer.
func runHostile(t *testing.T, modules map[string][]byte, cases []runCase, mutate func(*host.Config)) *fixture {
	cfg := hostileConfig(t, func(c *host.Config) {
		c.SQL = map[string]host.SQLDB{"DB": fakeSQL{}}
		c.Analytics = map[string]host.AnalyticsBinding{"AE": {Dataset: "points", Sink: fakeSink{}}}
		for name, bin := range modules {
			b := host.Binding{Name: name, ModuleBytes: bin}
			if name == "POINTERS" {
				b.SQL, b.Analytics = "DB", "AE"
			}
			c.Bindings = append(c.Bindings, b)
		}
		mutate(c)
	})
	f := start(t, cfg)
	ok := &healthy{f: f}
	ok.check(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for attempt := 1; attempt <= 2; attempt++ {
				resp, err := f.h.Fetch(context.Background(), tc.binding, "k", &abi.Request{Method: "POST", Path: tc.path})
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("attempt %d: error %v, want %v", attempt, err, tc.wantErr)
					}
					if !strings.Contains(err.Error(), tc.msg) {
						t.Errorf("attempt %d: error %q does not contain %q", attempt, err, tc.msg)
					}
					if st, code := host.ErrorStatus(err); st != tc.status || code != tc.code {
						t.Errorf("ErrorStatus = %d %s, want %d %s", st, code, tc.status, tc.code)
					}
				} else {
					if err != nil {
						t.Fatalf("attempt %d: %v", attempt, err)
					}
					if resp.Status != tc.status {
						t.Errorf("status %d, want %d", resp.Status, tc.status)
					}
					if err := tc.check(resp.Body); err != nil {
						t.Errorf("attempt %d: %v", attempt, err)
					}
				}
				ok.check(t)
			}
			if tc.output == "" {
				return
			}
			crashes := f.logs.Records(func(m map[string]any) bool {
				return m["binding"] == tc.binding && m["message"] == "shard instance discarded; the shard restarts from storage on its next event" &&
					strings.Contains(fmt.Sprint(m["guest_output"]), tc.output)
			})
			if len(crashes) != 2 {
				t.Errorf("%d crash log lines with guest output %q, want 2:\n%s", len(crashes), tc.output, f.logs.String())
			}
		})
	}
	return f
}

// TestHostileModulesContainedAtRunTime: every misbehaving module loads, and
// each request to it fails with the right error and status (or gets its
// guarded response), the shard recovers, and the other shards of the host
// never notice.
func TestHostileModulesContainedAtRunTime(t *testing.T) {
	modules, cases := runCases()
	runHostile(t, modules, cases, func(c *host.Config) {
		// Filling memory is slow under -race on a busy machine (wazero copies
		// memory as it grows): a generous deadline, a small cap.
		c.EventTimeout = 30 * time.Second
		c.MemoryLimitMiB = 40
		c.Engine = nil // a cap of its own: the shared engine's is 128 MiB
		c.Bindings = append(c.Bindings, host.Binding{Name: "RUNAWAY", Module: testutil.Plugin(t, "host/testdata/hostile/runaway")})
	})
}

// TestRunawayShardsHitTheDeadline: fetches that never return — a bare
// loop, a loop living in host calls, a Go guest spinning — end at the event
// deadline with 504, their writes discarded, while other shards serve.
func TestRunawayShardsHitTheDeadline(t *testing.T) {
	timeout := func(name, binding, path string) runCase {
		return runCase{name: name, binding: binding, path: path, wantErr: host.ErrTimeout, status: 504, code: "shard_timeout", msg: "deadline"}
	}
	putLoop := mutated(func(m *wasmtest.Module) {
		put := m.AddImport(wasmtest.HostImport(abi.FnStoragePut))
		m.Data = append(m.Data, wasmtest.Data{Offset: pKey, Bytes: []byte("k")})
		m.SetExport(abi.ExportFetch, sig(vt(i32, i32), vt(i64), wasmtest.Code(wasmtest.Loop(
			wasmtest.I32Const(pKey), wasmtest.I32Const(1), wasmtest.I32Const(pKey), wasmtest.I32Const(1), wasmtest.I32Const(0),
			wasmtest.Call(put), wasmtest.Op(wasmtest.OpDrop),
		), wasmtest.Op(wasmtest.OpUnreachable))))
	})
	modules := map[string][]byte{
		"LOOP":     withExport(abi.ExportFetch, sig(vt(i32, i32), vt(i64), wasmtest.Forever())),
		"PUT_LOOP": putLoop,
	}
	cases := []runCase{
		timeout("fetch loops", "LOOP", "/"),
		timeout("fetch loops calling storage_put", "PUT_LOOP", "/"),
		timeout("Go fetch spins", "COUNTER", "/spin"),
	}
	f := runHostile(t, modules, cases, func(c *host.Config) { c.EventTimeout = 500 * time.Millisecond })
	ns, _ := f.h.Namespace("PUT_LOOP")
	var found bool
	if err := ns.Inspect(context.Background(), "k", func(st host.StorageView) { _, found, _ = st.Get("k") }); err != nil {
		t.Fatal(err)
	}
	if found {
		t.Fatal("writes of an event that hit the deadline were kept")
	}
}

// TestHostileAlarmRetriesThenAbandons: an alarm handler that traps or
// reports failure is retried on the host's (virtual) clock after 2, 4, 8,
// 16, 32 and 64 s with retry counts 1..6, then abandoned for good; one that
// spins is ended by the event deadline and retried the same way. Other
// shards serve throughout.
func TestHostileAlarmRetriesThenAbandons(t *testing.T) {
	vc := clock.NewVirtual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f := startMemory(t, func(c *host.Config) {
		c.Clock = vc
		c.EventTimeout = time.Second
		c.Bindings = append(c.Bindings, host.Binding{Name: "ALARM", Module: testutil.Plugin(t, "host/testdata/hostile/alarm")})
	})
	ns, _ := f.h.Namespace("ALARM")
	ok := &healthy{f: f}
	fetch := func(t *testing.T, shard, method, path string) {
		t.Helper()
		resp, err := ns.Fetch(context.Background(), shard, &abi.Request{Method: method, Path: path})
		if err != nil || resp.Status != 200 {
			t.Fatalf("%s %s on %s: %v %v", method, path, shard, resp, err)
		}
	}
	runs := func(shard string) []string {
		var retries []string
		for _, l := range f.logs.Records(func(m map[string]any) bool {
			return m["shard"] == shard && m["message"] == "hostile alarm ran"
		}) {
			retries = append(retries, fmt.Sprint(l["retry"]))
		}
		return retries
	}
	arm := func(t *testing.T, shard, mode string) time.Time {
		at := vc.Now().Add(time.Second)
		fetch(t, shard, "POST", "/arm?mode="+mode+"&at="+strconv.FormatInt(at.UnixMilli(), 10))
		return at
	}
	for _, mode := range []string{"trap", "fail"} {
		t.Run(mode, func(t *testing.T) {
			shard := "alarm-" + mode
			at := arm(t, shard, mode)
			vc.Set(at)
			fetch(t, shard, "GET", "/") // queued behind the alarm: it has run
			want := []string{"0"}
			if got := runs(shard); strings.Join(got, ",") != "0" {
				t.Fatalf("runs %v, want [0]", got)
			}
			due := at
			for retry, delay := range []time.Duration{2, 4, 8, 16, 32, 64} {
				delay *= time.Second
				due = due.Add(delay)
				if next, ok := ns.AlarmAt(shard); !ok || !next.Equal(due) {
					t.Fatalf("retry %d scheduled at %v (%v), want %v", retry+1, next, ok, due)
				}
				vc.Advance(delay - time.Millisecond)
				fetch(t, shard, "GET", "/")
				if got := runs(shard); len(got) != len(want) {
					t.Fatalf("retry %d ran %v early (runs %v)", retry+1, time.Millisecond, got)
				}
				vc.Advance(time.Millisecond)
				fetch(t, shard, "GET", "/")
				want = append(want, strconv.Itoa(retry+1))
				if got := runs(shard); strings.Join(got, ",") != strings.Join(want, ",") {
					t.Fatalf("after %v: runs %v, want %v", delay, got, want)
				}
				ok.check(t)
			}
			if _, pending := ns.AlarmAt(shard); pending {
				t.Fatal("alarm still scheduled after its sixth retry failed")
			}
			abandoned := f.logs.Records(func(m map[string]any) bool {
				return m["shard"] == shard && m["message"] == "alarm abandoned after its last retry"
			})
			if len(abandoned) != 1 {
				t.Fatalf("%d 'abandoned' log lines, want 1", len(abandoned))
			}
			vc.Advance(24 * time.Hour)
			fetch(t, shard, "GET", "/")
			if got := runs(shard); len(got) != 7 {
				t.Fatalf("abandoned alarm ran again: %v", got)
			}
		})
	}
	t.Run("loop", func(t *testing.T) {
		shard := "alarm-loop"
		at := arm(t, shard, "loop")
		vc.Set(at)
		ok.check(t) // served while the alarm spins
		fetch(t, shard, "GET", "/")
		if got := runs(shard); strings.Join(got, ",") != "0" {
			t.Fatalf("runs %v, want [0]", got)
		}
		failed := f.logs.Records(func(m map[string]any) bool {
			return m["shard"] == shard && m["message"] == "alarm failed; retrying with backoff" && strings.Contains(fmt.Sprint(m["error"]), "deadline")
		})
		if len(failed) != 1 {
			t.Fatalf("%d retry log lines naming the deadline, want 1", len(failed))
		}
		if next, ok := ns.AlarmAt(shard); !ok || !next.Equal(at.Add(2*time.Second)) {
			t.Fatalf("retry scheduled at %v (%v), want %v", next, ok, at.Add(2*time.Second))
		}
	})
}

// TestShardStartLoopIsBounded: a module that passes the load probe but
// spins in edgeshard_init when a shard starts (its clock reads 2031) is
// ended by the engine's start timeout; the request fails as unavailable and
// other shards serve meanwhile.
func TestShardStartLoopIsBounded(t *testing.T) {
	t.Parallel()
	vc := clock.NewVirtual(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	f := startMemory(t, func(c *host.Config) {
		c.Clock = vc
		c.Bindings = append(c.Bindings, host.Binding{
			Name: "SPIN", ModuleBytes: wasmtest.InitSpinsAfter(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)).Bytes(),
		})
	})
	var done atomic.Bool
	errc := make(chan error, 1)
	go func() {
		_, err := f.h.Fetch(context.Background(), "SPIN", "s", &abi.Request{Method: "GET", Path: "/"})
		done.Store(true)
		errc <- err
	}()
	ok := &healthy{f: f}
	for i := 0; i < 3; i++ {
		ok.check(t)
	}
	if done.Load() {
		t.Error("the spinning start ended before the healthy shards were checked: nothing shows they served meanwhile")
	}
	select {
	case err := <-errc:
		if !errors.Is(err, host.ErrUnavailable) || !strings.Contains(err.Error(), "edgeshard_init") {
			t.Fatalf("error %v, want ErrUnavailable naming edgeshard_init", err)
		}
		if st, code := host.ErrorStatus(err); st != 503 || code != "shard_unavailable" {
			t.Fatalf("ErrorStatus = %d %s", st, code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a shard whose init spins was not stopped within 30s")
	}
	ok.check(t)
}

// TestFarFutureAlarmDoesNotSpin: the latest alarm a plugin may set is
// still a finite wait for the scheduler, and a later one is refused: an
// alarm centuries ahead used to overflow the scheduler's time.Duration,
// making it fire and re-arm in a loop (with a virtual clock, Advance never
// returned).
func TestFarFutureAlarmDoesNotSpin(t *testing.T) {
	const latest = math.MaxInt64 / int64(time.Millisecond)
	vc := clock.NewVirtual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := wasmtest.CallsPlugin([]wasmtest.HostCall{
		{Fn: abi.FnAlarmSet, Args: []int64{latest + 1}},
		{Fn: abi.FnAlarmSet, Args: []int64{math.MaxInt64}},
		{Fn: abi.FnAlarmSet, Args: []int64{latest}},
	})
	f := start(t, hostileConfig(t, func(c *host.Config) {
		c.Clock = vc
		c.Bindings = append(c.Bindings, host.Binding{Name: "FAR", ModuleBytes: m.Bytes()})
	}))
	resp, err := f.h.Fetch(context.Background(), "FAR", "far", &abi.Request{Method: "POST", Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if got := wasmtest.CallResults(resp.Body); fmt.Sprint(got) != fmt.Sprint([]int64{-int64(abi.ErrnoInvalid), -int64(abi.ErrnoInvalid), 0}) {
		t.Fatalf("alarm_set results %v", got)
	}
	ns, _ := f.h.Namespace("FAR")
	if at, ok := ns.AlarmAt("far"); !ok || at.UnixMilli() != latest {
		t.Fatalf("alarm scheduled at %v (%v), want %d ms", at, ok, latest)
	}
	done := make(chan struct{})
	go func() { vc.Advance(time.Hour); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the scheduler spins on a far-future alarm")
	}
	(&healthy{f: f}).check(t)
}
