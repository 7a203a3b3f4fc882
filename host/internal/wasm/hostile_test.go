package wasm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmbin"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/tetratelabs/wazero/api"
)

// fakeEnv serves host functions from an in-memory shard store, a var map
// and recording SQL and analytics bindings.
type fakeEnv struct {
	st     *storage.Shard
	vars   map[string]string
	logs   int
	points int
}

func newFakeEnv(tb testing.TB) *fakeEnv {
	e := storage.NewEngine(storage.NewMemory(), storage.EngineOptions{})
	tb.Cleanup(func() { e.Close() })
	return &fakeEnv{st: e.Shard(storage.ShardID{Namespace: "T", Name: "0"}), vars: map[string]string{"A": "abc"}}
}

func (e *fakeEnv) Store() Store                     { return e.st }
func (e *fakeEnv) SetAlarm(ms int64) error          { return e.st.SetAlarm(ms) }
func (e *fakeEnv) GetAlarm() (int64, bool, error)   { return e.st.GetAlarm() }
func (e *fakeEnv) DeleteAlarm() error               { return e.st.DeleteAlarm() }
func (e *fakeEnv) Var(name string) (string, bool)   { v, ok := e.vars[name]; return v, ok }
func (e *fakeEnv) Log(level int32, r abi.LogRecord) { e.logs++ }
func (e *fakeEnv) SQL(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	if len(stmts) > 0 && strings.HasPrefix(stmts[0].SQL, "FAIL") {
		return nil, errors.New("statement 1: syntax error")
	}
	rs := make([]abi.Result, len(stmts))
	for i := range rs {
		rs[i] = abi.Result{Columns: []string{"x"}, Rows: [][]any{{int64(i)}}}
	}
	return rs, nil
}
func (e *fakeEnv) WriteDataPoint(p abi.DataPoint) error { e.points++; return nil }

// driverModule is wasmtest.DriverPlugin with 512 KiB of memory: room for
// over-limit arguments. Tests call its call_<fn> exports with any
// arguments, as a hostile guest would.
func driverModule() []byte { return wasmtest.DriverPlugin(8).Bytes() }

type driver struct {
	fns  map[string]api.Function
	inst *Instance
	env  *fakeEnv
	x    callCtx
	c    *call
	ctx  context.Context
}

func newDriver(tb testing.TB, eng *Engine) *driver { return newDriverWith(tb, eng, driverModule()) }

func newDriverWith(tb testing.TB, eng *Engine, bin []byte) *driver {
	tb.Helper()
	ctx := context.Background()
	m, err := eng.Load(ctx, bin, abi.AllGroups)
	if err != nil {
		tb.Fatalf("load driver: %v", err)
	}
	tb.Cleanup(func() { m.Close(ctx) })
	inst, err := m.Instantiate(ctx, InstanceConfig{})
	if err != nil {
		tb.Fatalf("instantiate driver: %v", err)
	}
	tb.Cleanup(func() { inst.Close(ctx) })
	d := &driver{inst: inst, env: newFakeEnv(tb), fns: map[string]api.Function{}}
	for _, name := range wasmtest.HostFunctions() {
		d.fns[name] = inst.mod.ExportedFunction("call_" + name)
	}
	d.reset()
	return d
}

// reset starts a new event: a fresh call state, storage writes dropped.
func (d *driver) reset() {
	d.env.st.Abort()
	d.ctx = d.x.reset(context.Background(), d.env)
	d.c = &d.x.c
}

func (d *driver) mem() api.Memory { return d.inst.mod.Memory() }

func (d *driver) call(fn string, args ...uint64) (int64, error) {
	res, err := d.fns[fn].Call(d.ctx, args...)
	if err != nil {
		return 0, err
	}
	return int64(res[0]), nil
}

func newTestEngine(tb testing.TB, cfg Config) *Engine {
	tb.Helper()
	eng, err := NewEngine(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eng.Close(context.Background()) })
	return eng
}

func TestWasmtestSignaturesMatchHostFunctions(t *testing.T) {
	var names []string
	for _, hf := range hostFuncs() {
		names = append(names, hf.name)
		im := wasmtest.HostImport(hf.name)
		conv := func(ts []api.ValueType) []wasmtest.ValType {
			out := []wasmtest.ValType{}
			for _, v := range ts {
				out = append(out, wasmtest.ValType(v))
			}
			return out
		}
		if !slices.Equal(conv(hf.params), append([]wasmtest.ValType{}, im.Params...)) || !slices.Equal(conv(hf.results), append([]wasmtest.ValType{}, im.Results...)) {
			t.Errorf("%s: wasmtest signature %v -> %v, host %v -> %v", hf.name, im.Params, im.Results, hf.params, hf.results)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, wasmtest.HostFunctions()) {
		t.Errorf("wasmtest knows %v, the host defines %v", wasmtest.HostFunctions(), names)
	}
}

// Guest memory offsets the hostile-argument test writes its inputs to.
const (
	offKey  = 0x2000 // "k"
	offVal  = 0x2100 // "v"
	offVar  = 0x2200 // "A"
	offBig  = 0x10000
	offData = 0x3000
	memEnd  = 8 << 16 // first byte past the driver's memory
)

func TestHostFunctionsHostileArguments(t *testing.T) {
	eng := newTestEngine(t, Config{})
	d := newDriver(t, eng)
	w := func(off uint32, b []byte) {
		if !d.mem().Write(off, b) {
			t.Fatalf("write %d bytes at %#x", len(b), off)
		}
	}
	w(offKey, []byte("k"))
	w(offVal, []byte("v"))
	w(offVar, []byte("A"))
	le := binary.LittleEndian
	u32 := func(v uint32) []byte { return le.AppendUint32(nil, v) }
	stmts := func(n, args int) []byte {
		b := u32(uint32(n))
		for i := 0; i < n; i++ {
			b = append(b, u32(1)...)
			b = append(b, 'S')
			b = append(b, u32(uint32(args))...)
			for j := 0; j < args; j++ {
				b = append(b, abi.TagNull)
			}
		}
		return b
	}
	validStmts, _ := abi.AppendStatements(nil, []abi.Statement{{SQL: "SELECT 1"}})
	bothStarts := abi.AppendListOptions(nil, &abi.ListOptions{HasStart: true, HasStartAfter: true})
	validLog := abi.AppendLogRecord(nil, &abi.LogRecord{Message: "hi"})
	validPoint := abi.AppendDataPoint(nil, &abi.DataPoint{Doubles: []float64{1}})

	const (
		S     = wasmtest.Scratch
		oob   = memEnd
		neg1  = math.MaxUint32 // -1 as u32: the last address
		fault = -int64(abi.ErrnoFault)
		big   = -int64(abi.ErrnoTooLarge)
		inval = -int64(abi.ErrnoInvalid)
		nores = -int64(abi.ErrnoNoResult)
		none  = -int64(abi.ErrnoNotFound)
	)
	type step struct {
		name string
		data []byte // written at offData first, when set
		fn   string
		args []uint64
		want int64
	}
	steps := []step{
		{"take with nothing held", nil, "result_take", []uint64{S, 16}, nores},
		{"no error message yet", nil, "error_message", []uint64{S, 16}, 0},
		{"get key past memory", nil, "storage_get", []uint64{oob, 1, S, 16}, fault},
		{"get key wrapping the address space", nil, "storage_get", []uint64{neg1, 2, S, 16}, fault},
		{"get key of length 2^32-1", nil, "storage_get", []uint64{offKey, neg1, S, 16}, fault},
		{"get key over the limit", nil, "storage_get", []uint64{offBig, abi.MaxKeySize + 1, S, 16}, big},
		{"get absent key", nil, "storage_get", []uint64{offKey, 1, S, 16}, none},
		{"put", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0},
		{"put value past memory", nil, "storage_put", []uint64{offKey, 1, oob - 1, 2, 0}, fault},
		{"put key over the limit", nil, "storage_put", []uint64{offBig, abi.MaxKeySize + 1, offVal, 1, 0}, big},
		{"put value over the limit", nil, "storage_put", []uint64{offKey, 1, offBig, abi.MaxValueSize + 1, 0}, big},
		{"put with unknown flags", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0xfffffffe}, 0},
		{"get into a buffer past memory", nil, "storage_get", []uint64{offKey, 1, oob, 16}, fault},
		{"get into a buffer wrapping the address space", nil, "storage_get", []uint64{offKey, 1, neg1, 16}, fault},
		{"get into no buffer holds the result", nil, "storage_get", []uint64{offKey, 1, 0, 0}, 1},
		{"take into a buffer past memory", nil, "result_take", []uint64{oob, 16}, fault},
		{"take into a buffer still too small", nil, "result_take", []uint64{S, 0}, 1},
		{"take", nil, "result_take", []uint64{S, 16}, 1},
		{"take twice", nil, "result_take", []uint64{S, 16}, nores},
		{"get_multi keys past memory", nil, "storage_get_multi", []uint64{oob, 4, S, 16}, fault},
		{"get_multi count 2^32-1", u32(math.MaxUint32), "storage_get_multi", []uint64{offData, 4, S, 16}, big},
		{"get_multi count beyond input", u32(3), "storage_get_multi", []uint64{offData, 4, S, 16}, inval},
		{"get_multi 129 keys", append(u32(129), make([]byte, 129*4)...), "storage_get_multi", []uint64{offData, 4 + 129*4, S, 16}, big},
		{"get_multi over the byte limit", nil, "storage_get_multi", []uint64{offBig, maxKeysBytes + 1, S, 16}, big},
		{"put_multi past memory", nil, "storage_put_multi", []uint64{oob - 2, 4, 0}, fault},
		{"put_multi truncated", u32(1), "storage_put_multi", []uint64{offData, 6, 0}, inval},
		{"put_multi 129 entries", append(u32(129), make([]byte, 129*8)...), "storage_put_multi", []uint64{offData, 4 + 129*8, 0}, big},
		{"delete key past memory", nil, "storage_delete", []uint64{oob, 1}, fault},
		{"delete key over the limit", nil, "storage_delete", []uint64{offBig, abi.MaxKeySize + 1}, big},
		{"delete", nil, "storage_delete", []uint64{offKey, 1}, 1},
		{"delete absent", nil, "storage_delete", []uint64{offKey, 1}, 0},
		{"delete_multi past memory", nil, "storage_delete_multi", []uint64{neg1, neg1}, fault},
		{"delete_multi count 2^31", u32(1 << 31), "storage_delete_multi", []uint64{offData, 4}, big},
		{"delete_multi trailing bytes", append(u32(0), 1), "storage_delete_multi", []uint64{offData, 5}, inval},
		{"list options past memory", nil, "storage_list", []uint64{oob, 1, S, 16}, fault},
		{"list options truncated", u32(0), "storage_list", []uint64{offData, 4, S, 16}, inval},
		{"list options over the limit", nil, "storage_list", []uint64{offBig, maxListOptsBytes + 1, S, 16}, big},
		{"list with start and startAfter", bothStarts, "storage_list", []uint64{offData, uint64(len(bothStarts)), S, 16}, inval},
		{"delete_all", nil, "storage_delete_all", nil, 0},
		{"alarm at 0", nil, "alarm_set", []uint64{0}, inval},
		{"alarm at -1", nil, "alarm_set", []uint64{math.MaxUint64}, inval},
		{"alarm at MaxInt64", nil, "alarm_set", []uint64{math.MaxInt64}, inval},
		{"alarm past 2262", nil, "alarm_set", []uint64{uint64(maxAlarmMs) + 1}, inval},
		{"alarm at the latest time", nil, "alarm_set", []uint64{uint64(maxAlarmMs)}, 0},
		{"alarm", nil, "alarm_set", []uint64{1e12}, 0},
		{"alarm get", nil, "alarm_get", nil, 1e12},
		{"alarm delete", nil, "alarm_delete", nil, 0},
		{"alarm get after delete", nil, "alarm_get", nil, none},
		{"var name past memory", nil, "var_get", []uint64{oob, 1, S, 16}, fault},
		{"var name over the limit", nil, "var_get", []uint64{offBig, abi.MaxVarName + 1, S, 16}, big},
		{"var unset", nil, "var_get", []uint64{offKey, 1, S, 16}, none},
		{"var into a buffer past memory", nil, "var_get", []uint64{offVar, 1, oob - 1, 16}, fault},
		{"var", nil, "var_get", []uint64{offVar, 1, S, 16}, 3},
		{"log record past memory", nil, "log_write", []uint64{1, oob, 1}, fault},
		{"log record over the limit", nil, "log_write", []uint64{1, offBig, abi.MaxLogMessage + 1}, big},
		{"log record malformed", u32(9), "log_write", []uint64{1, offData, 4}, inval},
		{"log at level 2^32-1", validLog, "log_write", []uint64{neg1, offData, uint64(len(validLog))}, 0},
		{"sql past memory", nil, "sql_exec", []uint64{oob, 4, S, 16}, fault},
		{"sql over 16 MiB", nil, "sql_exec", []uint64{0, abi.MaxSQLPayload + 1, S, 16}, big},
		{"sql 1001 statements", stmts(abi.MaxSQLStatements+1, 0), "sql_exec", []uint64{offData, uint64(len(stmts(abi.MaxSQLStatements+1, 0))), S, 16}, big},
		{"sql 101 arguments", stmts(1, abi.MaxSQLArgs+1), "sql_exec", []uint64{offData, uint64(len(stmts(1, abi.MaxSQLArgs+1))), S, 16}, big},
		{"sql count 2^32-1", u32(math.MaxUint32), "sql_exec", []uint64{offData, 4, S, 16}, big},
		{"sql bad value tag", append(stmts(1, 1)[:len(stmts(1, 1))-1], 9), "sql_exec", []uint64{offData, uint64(len(stmts(1, 1))), S, 16}, inval},
		{"sql results into a buffer past memory", validStmts, "sql_exec", []uint64{offData, uint64(len(validStmts)), oob, 1 << 20}, fault},
		{"analytics past memory", nil, "analytics_write", []uint64{oob, 4}, fault},
		{"analytics over the limits", nil, "analytics_write", []uint64{offBig, maxDataPointBytes + 1}, big},
		{"analytics malformed", u32(5), "analytics_write", []uint64{offData, 4}, inval},
		{"analytics", validPoint, "analytics_write", []uint64{offData, uint64(len(validPoint))}, 0},
		{"analytics with a failed message set", u32(5), "analytics_write", []uint64{offData, 4}, inval},
		{"error message into a buffer past memory", nil, "error_message", []uint64{oob, 100}, fault},
		{"error message truncated", nil, "error_message", []uint64{S, 5}, 5},
	}
	wantAtS := map[string]string{"take": "v", "var": "abc", "error message truncated": "abi: "}
	for _, s := range steps {
		if s.data != nil {
			w(offData, s.data)
		}
		got, err := d.call(s.fn, s.args...)
		if err != nil {
			t.Fatalf("%s: %s%v trapped: %v", s.name, s.fn, s.args, err)
		}
		if got != s.want {
			t.Errorf("%s: %s%v = %d, want %d (error_message %q)", s.name, s.fn, s.args, got, s.want, d.c.errMsg)
		}
		if want, ok := wantAtS[s.name]; ok {
			if b, _ := d.mem().Read(S, uint32(len(want))); string(b) != want {
				t.Errorf("%s: buffer holds %q, want %q", s.name, b, want)
			}
		}
	}
}

func TestHostFunctionsDuringInitAreNotGranted(t *testing.T) {
	eng := newTestEngine(t, Config{})
	m := wasmtest.Plugin()
	put := m.AddImport(wasmtest.HostImport(abi.FnStoragePut))
	// init returns -storage_put(...): the errno the host answered.
	m.SetExport(abi.ExportInit, wasmtest.Func{Results: []wasmtest.ValType{wasmtest.I32}, Body: wasmtest.Code(
		wasmtest.I32Const(0),
		wasmtest.I32Const(-1), wasmtest.I32Const(5), wasmtest.I32Const(0), wasmtest.I32Const(1), wasmtest.I32Const(0),
		wasmtest.Call(put),
		[]byte{0x6b}, // i32.sub
	)})
	_, err := eng.Load(context.Background(), m.Bytes(), abi.AllGroups)
	if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), "edgeshard_init returned errno 5 (binding not granted)") {
		t.Fatalf("Load = %v, want init refused with errno 5", err)
	}
}

// TestStartIsBounded: a start function, _initialize, the ABI version probe
// or init that never returns is ended by Config.StartTimeout even when the
// caller's context has no deadline, at load and when a shard starts.
func TestStartIsBounded(t *testing.T) {
	eng := newTestEngine(t, Config{StartTimeout: 200 * time.Millisecond})
	loop := func(name string, results ...wasmtest.ValType) func(*wasmtest.Module) {
		return func(m *wasmtest.Module) {
			m.SetExport(name, wasmtest.Func{Results: results, Body: wasmtest.Forever()})
		}
	}
	i32 := wasmtest.I32
	for _, tc := range []struct {
		name   string
		mutate func(*wasmtest.Module)
		want   string
	}{
		{"wasm start section", func(m *wasmtest.Module) {
			idx := uint32(len(m.Imports) + len(m.Funcs))
			m.Funcs = append(m.Funcs, wasmtest.Func{Body: wasmtest.Forever()})
			m.Start = &idx
		}, "start (start section) did not return before the start deadline (start timeout 200ms)"},
		{"_initialize", loop(abi.ExportInitialize), "start (_initialize) did not return before the start deadline"},
		{"abi version", loop(abi.ExportABIVersion, i32), "edgeshard_abi_version did not return before the start deadline"},
		{"init", loop(abi.ExportInit, i32), "edgeshard_init did not return before the start deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			tc.mutate(m)
			t0 := time.Now()
			_, err := eng.Load(context.Background(), m.Bytes(), nil)
			if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want ErrInvalidModule containing %q", err, tc.want)
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Fatalf("Load took %v", d)
			}
		})
	}
	t.Run("init loops only when a shard starts", func(t *testing.T) {
		m := initLoopsAfter2030()
		mod, err := eng.Load(context.Background(), m, nil) // the probe runs on the real clock
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close(context.Background())
		future := func() time.Time { return time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC) }
		_, err = mod.Instantiate(context.Background(), InstanceConfig{Walltime: future})
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Instantiate = %v, want ErrTimeout", err)
		}
	})
}

func initLoopsAfter2030() []byte {
	return wasmtest.InitSpinsAfter(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)).Bytes()
}

// TestLoadEveryTruncation: every proper prefix of a valid plugin is refused
// as an invalid module (never a panic), except a cut between sections that
// leaves a module without its data, which is still a valid plugin.
func TestLoadEveryTruncation(t *testing.T) {
	eng := newTestEngine(t, Config{})
	bin := wasmtest.Plugin().Bytes()
	ends := wasmtest.SectionEnds(bin)
	for n := 0; n < len(bin); n++ {
		m, err := eng.Load(context.Background(), bin[:n], nil)
		switch {
		case err == nil && slices.Contains(ends, n):
			m.Close(context.Background())
		case !errors.Is(err, ErrInvalidModule):
			t.Fatalf("Load(first %d of %d bytes) = %v, want ErrInvalidModule", n, len(bin), err)
		}
	}
	m, err := eng.Load(context.Background(), bin, nil)
	if err != nil {
		t.Fatalf("the whole module: %v", err)
	}
	m.Close(context.Background())
}

func TestFetchResponseLimits(t *testing.T) {
	eng := newTestEngine(t, Config{})
	const hdr = 12 // status, header count, body length
	for _, tc := range []struct {
		name   string
		body   uint32 // body length claimed and returned
		packed int64  // overrides the returned ptr<<32|len when non-zero
		want   error
	}{
		{"body at the limit", abi.MaxResponseBody, 0, nil},
		{"body one byte over", abi.MaxResponseBody + 1, 0, ErrBadResponse},
		{"length 2^32-1", 0, wasmtest.Packed(0, math.MaxUint32), ErrBadResponse},
		{"pointer past memory", 0, wasmtest.Packed(math.MaxUint32-4, hdr), ErrBadResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			m.Memory = &wasmtest.Limits{Min: (hdr + abi.MaxResponseBody + 2 + 0xffff) >> 16, Max: -1}
			head := wasmtest.EncodeResponse(200, 0, nil)
			binary.LittleEndian.PutUint32(head[8:], tc.body)
			m.Data = []wasmtest.Data{{Offset: 0, Bytes: head}}
			packed := tc.packed
			if packed == 0 {
				packed = wasmtest.Packed(0, hdr+tc.body)
			}
			m.SetExport(abi.ExportFetch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I64}, Body: wasmtest.I64Const(packed)})
			mod, err := eng.Load(context.Background(), m.Bytes(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer mod.Close(context.Background())
			inst, err := mod.Instantiate(context.Background(), InstanceConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(context.Background())
			resp, err := inst.Fetch(context.Background(), newFakeEnv(t), &abi.Request{Method: "GET", Path: "/"})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Fetch = %v, want %v", err, tc.want)
			}
			if err == nil && len(resp.Body) != int(tc.body) {
				t.Fatalf("body %d bytes, want %d", len(resp.Body), tc.body)
			}
			if err != nil && inst.Err() == nil {
				t.Fatal("instance still alive after a bad response")
			}
		})
	}
}

// FuzzHostFunctions drives every host function through a real instance
// with arbitrary arguments and guest memory contents. Whatever the guest
// passes, a host function must not trap or panic, must answer a length or a
// known -errno, and must write guest memory only inside the buffer the call
// names.
func FuzzHostFunctions(f *testing.F) {
	names := wasmtest.HostFunctions()
	idx := func(name string) uint8 { return uint8(slices.Index(names, name)) }
	keys := abi.AppendKeys(nil, []string{"a", "b"})
	kvs := abi.AppendKVs(nil, []abi.KV{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}})
	list := abi.AppendListOptions(nil, &abi.ListOptions{Prefix: "a", Limit: 1})
	stmts, _ := abi.AppendStatements(nil, []abi.Statement{{SQL: "SELECT ?", Args: []any{int64(1), "x", []byte{1}, nil, 1.5}}})
	point := abi.AppendDataPoint(nil, &abi.DataPoint{Indexes: []string{"i"}, Blobs: [][]byte{{1}}, Doubles: []float64{2}})
	rec := abi.AppendLogRecord(nil, &abi.LogRecord{Message: "m", Fields: []abi.Header{{Name: "k", Value: "v"}}})
	D := uint64(offData)
	for _, s := range []struct {
		fn   string
		data []byte
		args []uint64
	}{
		{abi.FnStoragePut, []byte("kv"), []uint64{D, 1, D + 1, 1, 0}},
		{abi.FnStorageGet, []byte("k"), []uint64{D, 1, wasmtest.Scratch, 0}},
		{abi.FnStorageGetMulti, keys, []uint64{D, uint64(len(keys)), wasmtest.Scratch, 64}},
		{abi.FnStoragePutMulti, kvs, []uint64{D, uint64(len(kvs)), 1}},
		{abi.FnStorageDeleteMulti, keys, []uint64{D, uint64(len(keys))}},
		{abi.FnStorageList, list, []uint64{D, uint64(len(list)), wasmtest.Scratch, 8}},
		{abi.FnSQLExec, stmts, []uint64{D, uint64(len(stmts)), wasmtest.Scratch, 16}},
		{abi.FnAnalyticsWrite, point, []uint64{D, uint64(len(point))}},
		{abi.FnLogWrite, rec, []uint64{2, D, uint64(len(rec))}},
		{abi.FnVarGet, []byte("A"), []uint64{D, 1, memEnd - 2, 8}},
		{abi.FnResultTake, nil, []uint64{wasmtest.Scratch, 100}},
		{abi.FnErrorMessage, nil, []uint64{memEnd - 1, 100}},
		{abi.FnAlarmSet, nil, []uint64{math.MaxInt64}},
		{abi.FnStorageDelete, []byte{0xff}, []uint64{math.MaxUint32, 2}},
	} {
		a := append(s.args, 0, 0, 0, 0, 0)
		f.Add(idx(s.fn), a[0], a[1], a[2], a[3], a[4], s.data, false)
	}
	eng := newTestEngine(f, Config{})
	d := newDriver(f, eng)
	whole := func() []byte { b, _ := d.mem().Read(0, d.mem().Size()); return b }
	f.Fuzz(func(t *testing.T, sel uint8, a0, a1, a2, a3, a4 uint64, data []byte, newEvent bool) {
		fn := names[int(sel)%len(names)]
		if newEvent {
			d.reset()
		}
		if len(data) > 0 && !d.mem().Write(offData, data) {
			d.mem().Write(offData, data[:memEnd-offData])
		}
		im := wasmtest.HostImport(fn)
		args := []uint64{a0, a1, a2, a3, a4}[:len(im.Params)]
		// Arguments arrive as i32 except alarm_set's i64; a guest cannot pass
		// more than 32 bits in an i32, so neither do we.
		for i, p := range im.Params {
			if p == wasmtest.I32 {
				args[i] = uint64(uint32(args[i]))
			}
		}
		if fn == abi.FnSQLExec && args[1] <= abi.MaxSQLPayload && args[1] > 1<<20 {
			args[1] &= 0xfffff // keep fuzzed SQL batches small enough to run quickly
		}
		before := bytes.Clone(whole())
		got, err := d.call(fn, args...)
		if err != nil {
			t.Fatalf("%s%v trapped: %v", fn, args, err)
		}
		if got < 0 && (got < -int64(abi.ErrnoNoResult) || got == -int64(abi.ErrnoDeadline) || got == -int64(abi.ErrnoCanceled)) {
			t.Fatalf("%s%v = %d: not an ABI v1 errno", fn, args, got)
		}
		// Only a buffer the call names may change.
		lo, hi, replies := uint64(0), uint64(0), true
		switch fn {
		case abi.FnResultTake:
			lo, hi = args[0], args[0]+args[1]
		case abi.FnErrorMessage:
			lo, hi, replies = args[0], args[0]+args[1], false
		case abi.FnStorageGet, abi.FnStorageGetMulti, abi.FnStorageList, abi.FnVarGet, abi.FnSQLExec:
			lo, hi = args[2], args[2]+args[3]
		default:
			replies = false
		}
		after := whole()
		if len(after) != len(before) {
			t.Fatalf("%s%v changed the memory size from %d to %d", fn, args, len(before), len(after))
		}
		lo, hi = min(lo, uint64(len(after))), min(max(hi, lo), uint64(len(after)))
		if !bytes.Equal(after[:lo], before[:lo]) || !bytes.Equal(after[hi:], before[hi:]) {
			t.Fatalf("%s%v wrote guest memory outside its buffer [%#x, %#x)", fn, args, lo, hi)
		}
		// A result that fit is delivered, one that did not is held whole.
		if replies && got >= 0 {
			capacity := uint64(uint32(args[len(args)-1]))
			switch {
			case uint64(got) <= capacity && d.c.pending != nil:
				t.Fatalf("%s%v answered %d (fits in %d) but holds a result", fn, args, got, capacity)
			case uint64(got) > capacity && len(d.c.pending) != int(got):
				t.Fatalf("%s%v answered %d (over %d) but holds %d bytes", fn, args, got, capacity, len(d.c.pending))
			}
		}
	})
}

// FuzzLoad feeds arbitrary bytes to module validation: it must never
// panic, and must answer a module or an error wrapping ErrInvalidModule.
func FuzzLoad(f *testing.F) {
	f.Add(wasmtest.Plugin().Bytes())
	f.Add(driverModule())
	f.Add(initLoopsAfter2030())
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	f.Add([]byte("\x00asm\x02\x00\x00\x00"))
	f.Add([]byte{})
	bad := wasmtest.Plugin()
	bad.Memory = &wasmtest.Limits{Min: 1 << 15, Max: -1}
	f.Add(bad.Bytes())
	// An in-memory compilation cache: fuzzed modules must not fill the
	// shared on-disk one. A short start timeout keeps looping inputs cheap.
	eng := newTestEngine(f, Config{StartTimeout: 100 * time.Millisecond, MemoryLimitMiB: 16})
	f.Fuzz(func(t *testing.T, bin []byte) {
		m, err := eng.Load(context.Background(), bin, abi.AllGroups)
		if err != nil {
			if !errors.Is(err, ErrInvalidModule) {
				t.Fatalf("Load = %v: not ErrInvalidModule", err)
			}
			return
		}
		if m.ABIVersion != abi.Version {
			t.Fatalf("loaded a module of ABI version %d", m.ABIVersion)
		}
		m.Close(context.Background())
	})
}

// TestTableGrowIsCapped: table.grow allocates host memory outside the
// memory cap; a table without a declared maximum cannot grow at all, and
// none past wasmbin.MaxTableElems.
func TestTableGrowIsCapped(t *testing.T) {
	eng := newTestEngine(t, Config{})
	for _, tc := range []struct {
		name   string
		table  wasmtest.Limits
		delta  int32
		result int32
	}{
		{"no maximum, 2^30 more", wasmtest.Limits{Min: 1, Max: -1}, 1 << 30, -1},
		{"no maximum, one more", wasmtest.Limits{Min: 1, Max: -1}, 1, -1},
		{"maximum 2^31, 2^30 more", wasmtest.Limits{Min: 1, Max: 1 << 31}, 1 << 30, -1},
		{"maximum 2^31, to the cap", wasmtest.Limits{Min: 1, Max: 1 << 31}, wasmbin.MaxTableElems - 1, 1},
		{"maximum 10, 9 more", wasmtest.Limits{Min: 1, Max: 10}, 9, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			m.Tables = []wasmtest.Limits{tc.table}
			m.Data = append(m.Data, wasmtest.Data{Offset: 0x8000, Bytes: wasmtest.EncodeResponse(200, 0, make([]byte, 4))})
			m.SetExport(abi.ExportFetch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I64}, Body: wasmtest.Code(
				wasmtest.I32Const(0x8000+12),
				wasmtest.RefNullFunc(), wasmtest.I32Const(tc.delta), wasmtest.TableGrow(),
				wasmtest.Mem(wasmtest.OpI32Store, 0),
				wasmtest.I64Const(wasmtest.Packed(0x8000, 16)))})
			mod, err := eng.Load(context.Background(), m.Bytes(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer mod.Close(context.Background())
			inst, err := mod.Instantiate(context.Background(), InstanceConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(context.Background())
			resp, err := inst.Fetch(context.Background(), newFakeEnv(t), &abi.Request{})
			if err != nil {
				t.Fatal(err)
			}
			if got := int32(binary.LittleEndian.Uint32(resp.Body)); got != tc.result {
				t.Fatalf("table.grow(%d) = %d, want %d", tc.delta, got, tc.result)
			}
		})
	}
	m := wasmtest.Plugin()
	m.Tables = []wasmtest.Limits{{Min: wasmbin.MaxTableElems + 1, Max: -1}}
	if _, err := eng.Load(context.Background(), m.Bytes(), nil); !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), "table of 1048577 entries exceeds the limit") {
		t.Fatalf("Load of a huge table = %v", err)
	}
}

// TestAllocationBombsAreRefused: a few bytes claiming billions of
// elements are refused before wazero's decoder allocates for them (each of
// these killed the process with a fatal out-of-memory, or allocated 4 GiB).
func TestAllocationBombsAreRefused(t *testing.T) {
	eng := newTestEngine(t, Config{})
	for name, bin := range wasmtest.AllocationBombs() {
		t.Run(name, func(t *testing.T) {
			var err error
			n := testingAllocBytes(func() { _, err = eng.Load(context.Background(), bin, nil) })
			if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), "malformed binary") {
				t.Fatalf("Load = %v, want a malformed binary", err)
			}
			if n > 1<<20 {
				t.Fatalf("refusing %d bytes allocated %d bytes", len(bin), n)
			}
			t.Log(err)
		})
	}
}

func testingAllocBytes(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestHostFunctionsDoNotAmplify: a guest cannot make a host function
// allocate much more than the ABI limits allow, however large the argument
// it points at: sizes and counts are checked before anything is copied or
// decoded.
func TestHostFunctionsDoNotAmplify(t *testing.T) {
	eng := newTestEngine(t, Config{})
	d := newDriverWith(t, eng, wasmtest.DriverPlugin(320).Bytes()) // 20 MiB
	le := binary.LittleEndian
	const at = 0x10000
	big := uint64(16 << 20)
	nullArgs := append(le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, 1), 0), 16<<20-12), make([]byte, 16<<20-12)...)
	emptyKeys := append(le.AppendUint32(nil, 4<<20-1), make([]byte, 16<<20-4)...)
	emptyBlobs := append(le.AppendUint32(le.AppendUint32(nil, 0), 4<<20-2), make([]byte, 16<<20-8)...)
	for _, tc := range []struct {
		name string
		data []byte
		fn   string
		args []uint64
		want int64
	}{
		{"put a 16 MiB value", nil, abi.FnStoragePut, []uint64{at, 1, at, big, 0}, -int64(abi.ErrnoTooLarge)},
		{"put a 16 MiB key", nil, abi.FnStoragePut, []uint64{at, big, at, 1, 0}, -int64(abi.ErrnoTooLarge)},
		{"delete a 16 MiB key", nil, abi.FnStorageDelete, []uint64{at, big}, -int64(abi.ErrnoTooLarge)},
		{"SQL with 16M NULL arguments", nullArgs, abi.FnSQLExec, []uint64{at, big, 0, 0}, -int64(abi.ErrnoTooLarge)},
		{"get 4M empty keys", emptyKeys, abi.FnStorageGetMulti, []uint64{at, big, 0, 0}, -int64(abi.ErrnoTooLarge)},
		{"delete 4M empty keys", emptyKeys, abi.FnStorageDeleteMulti, []uint64{at, big}, -int64(abi.ErrnoTooLarge)},
		{"put 2M empty entries", emptyKeys, abi.FnStoragePutMulti, []uint64{at, big, 0}, -int64(abi.ErrnoTooLarge)},
		{"list with 16 MiB of options", nil, abi.FnStorageList, []uint64{at, big, 0, 0}, -int64(abi.ErrnoTooLarge)},
		{"data point of 4M empty blobs", emptyBlobs, abi.FnAnalyticsWrite, []uint64{at, big}, -int64(abi.ErrnoTooLarge)},
		{"log record of 16 MiB", nil, abi.FnLogWrite, []uint64{1, at, big}, -int64(abi.ErrnoTooLarge)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.data != nil && !d.mem().Write(at, tc.data) {
				t.Fatal("write")
			}
			var got int64
			var err error
			n := testingAllocBytes(func() { got, err = d.call(tc.fn, tc.args...) })
			if err != nil || got != tc.want {
				t.Fatalf("%s = %d, %v; want %d", tc.fn, got, err, tc.want)
			}
			if n > 64<<10 {
				t.Fatalf("refusing a %d-byte argument allocated %d bytes", tc.args[1], n)
			}
		})
	}
}
