package wasm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/tetratelabs/wazero/api"
)

// What the host function tests share: a fake Env, a driver that calls any
// host function with any arguments through a real instance, and a runner
// of call steps. The tests of each group are in hostfuncs_<group>_test.go.

// fakeEnv serves host functions from an in-memory shard store, a var map
// and recording log, SQL and analytics bindings. With fail set, every Env
// method and every Store method answers fail; with noStore, Store is nil.
type fakeEnv struct {
	st      *storage.Shard
	vars    map[string]string
	logs    int
	points  int
	fail    error
	noStore bool

	lastLevel int32
	lastLog   abi.LogRecord
	lastPoint abi.DataPoint
	lastSQL   []abi.Statement
	lastCall  *abi.CallRequest
	lastFetch *abi.Request
}

func newFakeEnv(tb testing.TB) *fakeEnv {
	e := storage.NewEngine(storage.NewMemory(), storage.EngineOptions{})
	tb.Cleanup(func() { e.Close() })
	return &fakeEnv{st: e.Shard(storage.ShardID{Namespace: "T", Name: "0"}), vars: map[string]string{"A": "abc"}}
}

func (e *fakeEnv) Store() Store {
	switch {
	case e.noStore:
		return nil
	case e.fail != nil:
		return failStore{e.fail}
	}
	return e.st
}

func (e *fakeEnv) SetAlarm(ms int64) error {
	if e.fail != nil {
		return e.fail
	}
	return e.st.SetAlarm(ms)
}

func (e *fakeEnv) GetAlarm() (int64, bool, error) {
	if e.fail != nil {
		return 0, false, e.fail
	}
	return e.st.GetAlarm()
}

func (e *fakeEnv) DeleteAlarm() error {
	if e.fail != nil {
		return e.fail
	}
	return e.st.DeleteAlarm()
}

func (e *fakeEnv) Var(name string) (string, bool) { v, ok := e.vars[name]; return v, ok }

func (e *fakeEnv) Log(level int32, r abi.LogRecord) {
	e.logs++
	e.lastLevel, e.lastLog = level, r
}

func (e *fakeEnv) SQL(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	if e.fail != nil {
		return nil, e.fail
	}
	if len(stmts) > 0 && strings.HasPrefix(stmts[0].SQL, "FAIL") {
		return nil, errors.New("statement 1: syntax error")
	}
	e.lastSQL = stmts
	rs := make([]abi.Result, len(stmts))
	for i := range rs {
		rs[i] = abi.Result{Columns: []string{"x"}, Rows: [][]any{{int64(i)}}}
	}
	return rs, nil
}

func (e *fakeEnv) WriteDataPoint(p abi.DataPoint) error {
	if e.fail != nil {
		return e.fail
	}
	e.points++
	e.lastPoint = p
	return nil
}

// CallShard answers a call with a response naming what it received, so a
// test sees the request arrived whole.
func (e *fakeEnv) CallShard(ctx context.Context, c *abi.CallRequest) (*abi.Response, error) {
	if e.fail != nil {
		return nil, e.fail
	}
	e.lastCall = c
	return &abi.Response{Status: 200, Header: []abi.Header{{Name: "X-To", Value: c.Binding + "/" + c.Key}}, Body: append([]byte(c.Method+" "+c.Path+" "), c.Body...)}, nil
}

// FetchHTTP answers like CallShard, naming the URL.
func (e *fakeEnv) FetchHTTP(ctx context.Context, r *abi.Request) (*abi.Response, error) {
	if e.fail != nil {
		return nil, e.fail
	}
	e.lastFetch = r
	return &abi.Response{Status: 201, Body: append([]byte(r.Method+" "+r.Path+" "), r.Body...)}, nil
}

// failStore is a Store whose every method answers err.
type failStore struct{ err error }

func (f failStore) Get(string) ([]byte, bool, error)            { return nil, false, f.err }
func (f failStore) GetMulti([]string) ([]abi.KV, error)         { return nil, f.err }
func (f failStore) Put(string, []byte, bool) error              { return f.err }
func (f failStore) PutMulti([]abi.KV, bool) error               { return f.err }
func (f failStore) Delete(string) (bool, error)                 { return false, f.err }
func (f failStore) DeleteMulti([]string) (int, error)           { return 0, f.err }
func (f failStore) List(opts abi.ListOptions) ([]abi.KV, error) { return nil, f.err }
func (f failStore) DeleteAll() error                            { return f.err }

// driverModule is wasmtest.DriverPlugin with 512 KiB of memory: room for
// over-limit arguments. Tests call its call_<fn> exports with any
// arguments, as a hostile guest would.
func driverModule() []byte { return wasmtest.DriverPlugin(8).Bytes() }

// driver calls host functions through the call_<fn> exports of one
// instance of a driver module, within one event of env (reset starts a
// new one).
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
func (d *driver) reset() { d.resetWith(d.env) }

// resetWith starts a new event of env (another Env than the fake, e.g. a
// tracing one), storage writes dropped.
func (d *driver) resetWith(env Env) {
	d.env.st.Abort()
	d.ctx = d.x.reset(context.Background(), env)
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

func (d *driver) write(t testing.TB, off uint32, b []byte) {
	t.Helper()
	if !d.mem().Write(off, b) {
		t.Fatalf("write %d bytes at %#x", len(b), off)
	}
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

// Guest memory of the driver the steps use.
const (
	offKey  = 0x2000 // "k"
	offVal  = 0x2100 // "v"
	offVar  = 0x2200 // "A"
	offBig  = 0x10000
	offData = 0x3000  // a step's data
	memEnd  = 8 << 16 // first byte past the driver's memory

	buf  = wasmtest.Scratch // a result buffer
	oob  = memEnd
	neg1 = math.MaxUint32 // -1 as u32: the last address
)

// Results the steps expect.
const (
	eFault      = -int64(abi.ErrnoFault)
	eTooLarge   = -int64(abi.ErrnoTooLarge)
	eInvalid    = -int64(abi.ErrnoInvalid)
	eNoResult   = -int64(abi.ErrnoNoResult)
	eNotFound   = -int64(abi.ErrnoNotFound)
	eNotGranted = -int64(abi.ErrnoNotGranted)
)

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// step is one host call of a test: data is written at offData first when
// set; the call must answer want, and, when atBuf is set, leave it at buf.
type step struct {
	name  string
	data  []byte
	fn    string
	args  []uint64
	want  int64
	atBuf string
}

// heldSteps are the steps of a function answering through a buffer:
// called with the parameters in and a buffer of 256 bytes it answers
// want there; with a buffer of small bytes it holds want for
// result_take, which answers it.
func heldSteps(name string, data []byte, fn string, in []uint64, want []byte, small uint64) []step {
	n := int64(len(want))
	with := func(bufCap uint64) []uint64 { return append(append([]uint64(nil), in...), buf, bufCap) }
	return []step{
		{name, data, fn, with(256), n, string(want)},
		{name + " held", data, fn, with(small), n, ""},
		{"take", nil, abi.FnResultTake, []uint64{buf, 256}, n, string(want)},
	}
}

// newHostileDriver is a driver whose memory holds "k" at offKey, "v" at
// offVal and "A" at offVar.
func newHostileDriver(t *testing.T) *driver {
	d := newDriver(t, newTestEngine(t, Config{}))
	d.write(t, offKey, []byte("k"))
	d.write(t, offVal, []byte("v"))
	d.write(t, offVar, []byte("A"))
	return d
}

// runSteps makes the calls in order, in one event; none may trap.
func runSteps(t *testing.T, d *driver, steps []step) {
	t.Helper()
	for _, s := range steps {
		if s.data != nil {
			d.write(t, offData, s.data)
		}
		got, err := d.call(s.fn, s.args...)
		if err != nil {
			t.Fatalf("%s: %s%v trapped: %v", s.name, s.fn, s.args, err)
		}
		if got != s.want {
			t.Errorf("%s: %s%v = %d, want %d (error_message %q)", s.name, s.fn, s.args, got, s.want, d.c.errMsg)
		}
		if s.atBuf != "" {
			if b, _ := d.mem().Read(buf, uint32(len(s.atBuf))); string(b) != s.atBuf {
				t.Errorf("%s: buffer holds %q, want %q", s.name, b, s.atBuf)
			}
		}
	}
}

// envErrorCase is an Env failure and what a host function answers for it.
type envErrorCase struct {
	name  string
	err   error
	errno abi.Errno // for a function of a group without its own errno
}

// envErrorCases are the Env failures call.errno distinguishes.
var envErrorCases = []envErrorCase{
	{"not granted", fmt.Errorf("vars: %w", ErrNotGranted), abi.ErrnoNotGranted},
	{"call error", &CallError{Errno: abi.ErrnoInternal, Err: errors.New("internal")}, abi.ErrnoInternal},
	{"key too large", storage.ErrKeyTooLarge, abi.ErrnoTooLarge},
	{"value too large", storage.ErrValueTooLarge, abi.ErrnoTooLarge},
	{"too many keys", storage.ErrTooManyKeys, abi.ErrnoTooLarge},
	{"invalid", storage.ErrInvalid, abi.ErrnoInvalid},
	{"deadline", context.DeadlineExceeded, abi.ErrnoDeadline},
	{"canceled", context.Canceled, abi.ErrnoCanceled},
	{"io", errors.New("disk on fire"), abi.ErrnoIO},
}

// checkEnvErrors makes the call once per Env failure: it must answer the
// failure's errno (io for ErrnoIO, in groups with their own errno) with
// the error's text for error_message, and an injected crash must trap the
// guest.
func checkEnvErrors(t *testing.T, d *driver, io abi.Errno, fn string, args ...uint64) {
	t.Helper()
	defer func() { d.env.fail = nil }()
	for _, tc := range envErrorCases {
		d.reset()
		d.env.fail = tc.err
		want := tc.errno
		if want == abi.ErrnoIO {
			want = io
		}
		got, err := d.call(fn, args...)
		if err != nil || got != -int64(want) || d.c.errMsg != tc.err.Error() {
			t.Errorf("%s: %s%v = %d, %v (error_message %q); want %d, %q", tc.name, fn, args, got, err, d.c.errMsg, -int64(want), tc.err.Error())
		}
	}
	d.reset()
	d.env.fail = fmt.Errorf("injected: %w", ErrCrash)
	if _, err := d.call(fn, args...); err == nil || !strings.Contains(err.Error(), "injected crash") {
		t.Errorf("%s%v with an injected crash = %v, want a trap", fn, args, err)
	}
}

// checkNoAmplify calls each case's function on a 20 MiB driver: it must
// answer want and allocate at most 64 KiB, however large the argument it
// points at (sizes and counts are checked before anything is copied or
// decoded).
func checkNoAmplify(t *testing.T, cases []amplifyCase) {
	eng := newTestEngine(t, Config{})
	d := newDriverWith(t, eng, wasmtest.DriverPlugin(320).Bytes()) // 20 MiB
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.data != nil {
				d.write(t, amplifyAt, tc.data)
			}
			var got int64
			var err error
			n := wasmtest.AllocBytes(func() { got, err = d.call(tc.fn, tc.args...) })
			if err != nil || got != tc.want {
				t.Fatalf("%s = %d, %v; want %d", tc.fn, got, err, tc.want)
			}
			if n > 64<<10 {
				t.Fatalf("refusing a %d-byte argument allocated %d bytes", tc.args[1], n)
			}
		})
	}
}

// amplifyCase is a call with a huge argument at amplifyAt.
type amplifyCase struct {
	name string
	data []byte
	fn   string
	args []uint64
	want int64
}

const (
	amplifyAt  = 0x10000
	amplifyBig = uint64(16 << 20)
)

// TestWasmtestSignaturesMatchHostFunctions: wasmtest's copy of the host
// function signatures is the host's.
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

// TestHostGroupsAreTheABIGroups: every host function is declared in the
// group abi.FunctionGroups gives it, and every function the ABI lists is
// declared.
func TestHostGroupsAreTheABIGroups(t *testing.T) {
	declared := map[string]string{}
	for _, g := range hostGroups {
		if !slices.Contains(abi.AllGroups, g.group) {
			t.Errorf("unknown group %q", g.group)
		}
		for _, hf := range g.funcs {
			if _, dup := declared[hf.name]; dup {
				t.Errorf("%s declared twice", hf.name)
			}
			declared[hf.name] = g.group
		}
	}
	for name, group := range abi.FunctionGroups {
		if declared[name] != group {
			t.Errorf("%s: declared in group %q, the ABI's is %q", name, declared[name], group)
		}
	}
	if len(declared) != len(abi.FunctionGroups) {
		t.Errorf("%d host functions declared, the ABI lists %d", len(declared), len(abi.FunctionGroups))
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

// callRecorder turns tracing on for the fake Env that embeds it: it
// records every host call.
type callRecorder struct{ calls []HostCall }

func (r *callRecorder) Tracing() bool { return true }

func (r *callRecorder) TraceHostCall(hc HostCall) { r.calls = append(r.calls, hc) }

// tracingEnv is the fake Env with tracing on.
type tracingEnv struct {
	*fakeEnv
	callRecorder
}

// TestHostCallTrace: a traced event reports every host call decoded the
// way the function reads its arguments — keys and values quoted (values
// clipped to a preview), encoded lists, statements and data points
// summarised, alarm times in RFC 3339 — with its result (an i32 one
// sign-extended), the result decoded (a value, a count, "not found", an
// errno by name) and the message of that call's failure, if any (not an
// earlier call's, which error_message still answers).
func TestHostCallTrace(t *testing.T) {
	d := newHostileDriver(t)
	env := &tracingEnv{fakeEnv: d.env}
	d.resetWith(env)
	long := strings.Repeat("0123456789", 5)
	d.write(t, offBig, []byte("user:alice"+long))
	const offLong = offBig + uint64(len("user:alice"))
	keys := abi.AppendKeys(nil, []string{"k", "missing"})
	kvs := abi.AppendKVs(nil, []abi.KV{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("22")}})
	list := abi.AppendListOptions(nil, &abi.ListOptions{HasStartAfter: true, StartAfter: "a", Reverse: true, Limit: 10})
	stmts, _ := abi.AppendStatements(nil, []abi.Statement{
		{SQL: "CREATE TABLE IF NOT EXISTS t (\n\tx INTEGER\n)"},
		{SQL: "INSERT INTO t VALUES (?, ?, ?)", Args: []any{int64(7), "home", []byte{1, 2}}},
	})
	point := abi.AppendDataPoint(nil, &abi.DataPoint{Indexes: []string{"home"}, Blobs: [][]byte{[]byte("home")}, Doubles: []float64{2.5}})
	rec := abi.AppendLogRecord(nil, &abi.LogRecord{Message: "flushed", Fields: []abi.Header{{Name: "page", Value: "home"}}})
	at := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC).UnixMilli()
	for _, s := range []step{
		{"put", nil, abi.FnStoragePut, []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
		{"put a long value unconfirmed", nil, abi.FnStoragePut, []uint64{offBig, 10, offLong, uint64(len(long)), 1}, 0, ""},
		{"key past memory", nil, abi.FnStorageDelete, []uint64{neg1, 2}, eFault, ""},
		{"key too large", nil, abi.FnStorageDelete, []uint64{offBig, abi.MaxKeySize + 1}, eTooLarge, ""},
		{"get", nil, abi.FnStorageGet, []uint64{offKey, 1, buf, 16}, 1, ""},
		{"get held", nil, abi.FnStorageGet, []uint64{offBig, 10, buf, 8}, int64(len(long)), ""},
		{"take", nil, abi.FnResultTake, []uint64{buf, 64}, int64(len(long)), ""},
		{"get absent", nil, abi.FnStorageGet, []uint64{offVar, 1, buf, 16}, eNotFound, ""},
		{"put multi", kvs, abi.FnStoragePutMulti, []uint64{offData, uint64(len(kvs)), 0}, 0, ""},
		{"get multi", keys, abi.FnStorageGetMulti, []uint64{offData, uint64(len(keys)), buf, 64}, 14, ""},
		{"list", list, abi.FnStorageList, []uint64{offData, uint64(len(list)), buf, 64}, 93, ""},
		{"delete multi", keys, abi.FnStorageDeleteMulti, []uint64{offData, uint64(len(keys))}, 1, ""},
		{"delete", nil, abi.FnStorageDelete, []uint64{offKey, 1}, 0, ""},
		{"message", nil, abi.FnErrorMessage, []uint64{buf, 100}, 30, ""},
		{"alarm out of range", nil, abi.FnAlarmSet, []uint64{math.MaxUint64}, eInvalid, ""},
		{"alarm", nil, abi.FnAlarmSet, []uint64{uint64(at)}, 0, ""},
		{"alarm get", nil, abi.FnAlarmGet, nil, at, ""},
		{"var", nil, abi.FnVarGet, []uint64{offVar, 1, buf, 16}, 3, ""},
		{"var unset", nil, abi.FnVarGet, []uint64{offKey, 1, buf, 16}, eNotFound, ""},
		{"log", rec, abi.FnLogWrite, []uint64{2, offData, uint64(len(rec))}, 0, ""},
		{"sql", stmts, abi.FnSQLExec, []uint64{offData, uint64(len(stmts)), buf, 4096}, 80, ""},
		{"analytics", point, abi.FnAnalyticsWrite, []uint64{offData, uint64(len(point))}, 0, ""},
		{"malformed keys", le32(5), abi.FnStorageGetMulti, []uint64{offData, 4, buf, 64}, eInvalid, ""},
	} {
		if s.data != nil {
			d.write(t, offData, s.data)
		}
		if got, err := d.call(s.fn, s.args...); err != nil || got != s.want {
			t.Fatalf("%s: %s%v = %d, %v; want %d", s.name, s.fn, s.args, got, err, s.want)
		}
	}
	want := []string{
		`storage_put key="k" value=1 byte "v" → ok`,
		`storage_put key="user:alice" value=50 bytes "01234567890123456789012345678901"… unconfirmed → ok`,
		`storage_delete key=<outside memory: ptr 4294967295, len 2> → memory fault (errno 11)`,
		`storage_delete key="user:alice01234567890123456789012345678901234567890123456789\x00\x00\x00\x00"… (2049 bytes) → too large (errno 3): key of 2049 bytes exceeds 2048`,
		`storage_get key="k" → 1 byte "v"`,
		`storage_get key="user:alice" → 50 bytes "01234567890123456789012345678901"… (held for result_take, cap 8)`,
		`result_take cap=64 → 50 bytes`,
		`storage_get key="A" → not found`,
		`storage_put_multi 2 entries ["a"=1 byte "1" "b"=2 bytes "22"] → ok`,
		`storage_get_multi 2 keys ["k" "missing"] → 1 found ["k"=1 byte "v"]`,
		`storage_list startAfter="a" reverse limit=10 → 3 entries ["user:alice"=50 bytes "01234567890123456789012345678901"… "k"=1 byte "v" "b"=2 bytes "22"] (held for result_take, cap 64)`,
		`storage_delete_multi 2 keys ["k" "missing"] → 1 deleted`,
		`storage_delete key="k" → absent`,
		`error_message cap=100 → "key of 2049 bytes exceeds 2048"`,
		`alarm_set at=-1 ms → invalid argument (errno 2): alarm time -1 ms is outside 1..9223372036854 (2262-04-11)`,
		`alarm_set at=2026-01-01T00:00:10.000Z → ok`,
		`alarm_get → 2026-01-01T00:00:10.000Z`,
		`var_get name="A" → "abc"`,
		`var_get name="k" → unset`,
		`log_write warn "flushed" page="home" → ok`,
		`sql_exec 2 statements: "CREATE TABLE IF NOT EXISTS t ( x INTEGER )"; "INSERT INTO t VALUES (?, ?, ?)" [7 "home" blob(2 bytes)] → 2 results: 1 row, 1 row`,
		`analytics_write indexes=["home"] blobs=1 (4 bytes) doubles=[2.5] → ok`,
		`storage_get_multi <malformed Keys, 4 bytes> → invalid argument (errno 2): abi: malformed message`,
	}
	var got []string
	for _, c := range env.calls {
		got = append(got, c.String())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("trace:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The raw result stays beside the decoded one.
	if c := env.calls[7]; c.Result != eNotFound || c.Err != "" {
		t.Fatalf("storage_get of an absent key: %+v", c)
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
	callReq := abi.AppendCallRequest(nil, &abi.CallRequest{Binding: "B", Key: "k", Request: abi.Request{Method: "GET", Path: "/"}})
	fetchReq := abi.AppendRequest(nil, &abi.Request{Method: "GET", Path: "https://api.example.com/x"})
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
		{abi.FnShardCall, callReq, []uint64{D, uint64(len(callReq)), wasmtest.Scratch, 16}},
		{abi.FnHTTPFetch, fetchReq, []uint64{D, uint64(len(fetchReq)), wasmtest.Scratch, 64}},
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
	// Every call is traced: decoding a trace must survive what the guest
	// passes as well as the function does.
	trace := &tracingEnv{fakeEnv: d.env}
	d.resetWith(trace)
	whole := func() []byte { b, _ := d.mem().Read(0, d.mem().Size()); return b }
	f.Fuzz(func(t *testing.T, sel uint8, a0, a1, a2, a3, a4 uint64, data []byte, newEvent bool) {
		fn := names[int(sel)%len(names)]
		if newEvent {
			d.resetWith(trace)
		}
		trace.calls = trace.calls[:0]
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
		if got < 0 && (got < -int64(abi.ErrnoMax) || got == -int64(abi.ErrnoDeadline) || got == -int64(abi.ErrnoCanceled)) {
			t.Fatalf("%s%v = %d: not an ABI v1 errno", fn, args, got)
		}
		if len(trace.calls) != 1 || trace.calls[0].Fn != fn || trace.calls[0].Result != got || trace.calls[0].Outcome == "" {
			t.Fatalf("%s%v = %d traced as %+v", fn, args, got, trace.calls)
		}
		// Only a buffer the call names may change.
		lo, hi, replies := uint64(0), uint64(0), true
		switch fn {
		case abi.FnResultTake:
			lo, hi = args[0], args[0]+args[1]
		case abi.FnErrorMessage:
			lo, hi, replies = args[0], args[0]+args[1], false
		case abi.FnStorageGet, abi.FnStorageGetMulti, abi.FnStorageList, abi.FnVarGet, abi.FnSQLExec, abi.FnShardCall, abi.FnHTTPFetch:
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
