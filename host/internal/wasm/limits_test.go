package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
)

// Tests of the per-event limits (EventLimits), and of what ABI.md says a
// plugin written by hand meets: the held result, undefined flags and
// levels, edgeshard_alloc answering 0, the memory maximum, WASI.

const eLimit = -int64(abi.ErrnoLimit)

// limitingEnv is the fake Env with per-event limits: it records the
// limits reported reached.
type limitingEnv struct {
	*fakeEnv
	lim     EventLimits
	alarm   bool
	reached []string
}

func (e *limitingEnv) BeginEvent(alarm bool) *EventLimits { e.alarm = alarm; return &e.lim }

func (e *limitingEnv) LimitReached(limit, detail string) {
	e.reached = append(e.reached, limit+": "+detail)
}

// newLimitedDriver is a hostile driver whose events have lim.
func newLimitedDriver(t *testing.T, lim EventLimits) (*driver, *limitingEnv) {
	d := newHostileDriver(t)
	env := &limitingEnv{fakeEnv: d.env, lim: lim}
	return d, env
}

// event starts a new event of env on d, with its budget.
func (d *driver) event(env *limitingEnv) {
	d.resetWith(env)
	d.c.begin(false)
}

// TestEventWriteBudget: puts and deletes are charged to the event's byte
// and key budget, overwrites of one key included; past it a write answers
// -ErrnoLimit naming the setting, changes nothing, and is reported once
// per event; the next event starts afresh.
func TestEventWriteBudget(t *testing.T) {
	d, env := newLimitedDriver(t, EventLimits{WriteBytes: 1000, WriteKeys: 3})
	d.event(env)
	runSteps(t, d, []step{
		{"put k", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
		{"put k again: an overwrite counts", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
		{"delete k", nil, "storage_delete", []uint64{offKey, 1}, 1, ""},
		{"a fourth key write", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, eLimit, ""},
		{"nothing changed", nil, "storage_get", []uint64{offKey, 1, buf, 16}, eNotFound, ""},
		{"delete_all is a key too", nil, "storage_delete_all", nil, eLimit, ""},
	})
	const msg = "storage_put of 1 keys refused: this event already wrote 3 keys; event_write_keys is 3"
	runSteps(t, d, []step{{"the message", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, eLimit, ""},
		{"error_message", nil, "error_message", []uint64{buf, 200}, int64(len(msg)), msg}})
	if len(env.reached) != 1 || !strings.HasPrefix(env.reached[0], "event_write_keys: ") {
		t.Fatalf("reached %q, want event_write_keys once", env.reached)
	}

	d.event(env)
	env.reached = nil
	kvs := abi.AppendKVs(nil, []abi.KV{{Key: "a", Value: make([]byte, 500)}, {Key: "b", Value: make([]byte, 500)}})
	keys := abi.AppendKeys(nil, []string{"a", "b", "c"})
	two := abi.AppendKeys(nil, []string{"a", "b"})
	runSteps(t, d, []step{
		{"a new event starts afresh", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
		{"put_multi past the bytes", kvs, "storage_put_multi", []uint64{offData, uint64(len(kvs)), 0}, eLimit, ""},
		{"none of it written", keys, "storage_get_multi", []uint64{offData, uint64(len(keys)), buf, 64}, 4, ""},
		{"delete_multi of 3 keys past the keys", keys, "storage_delete_multi", []uint64{offData, uint64(len(keys))}, eLimit, ""},
		{"delete_multi of 2 keys fits", two, "storage_delete_multi", []uint64{offData, uint64(len(two))}, 0, ""},
	})
	if len(env.reached) != 2 || !strings.HasPrefix(env.reached[0], "event_write_bytes: storage_put_multi of 1002 bytes refused: this event already wrote 2 bytes") ||
		!strings.HasPrefix(env.reached[1], "event_write_keys: ") {
		t.Fatalf("reached %q", env.reached)
	}
}

// TestEventWriteBudgetRefundsFailedWrites: a write the Store refuses is
// not charged.
func TestEventWriteBudgetRefundsFailedWrites(t *testing.T) {
	d, env := newLimitedDriver(t, EventLimits{WriteKeys: 1})
	d.event(env)
	env.fail = errors.New("disk on fire")
	runSteps(t, d, []step{{"put fails", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, -int64(abi.ErrnoIO), ""}})
	env.fail = nil
	runSteps(t, d, []step{{"put fits", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""}})
}

// TestEventWithoutLimits: an Env that is not a Limiter, or limits ≤ 0,
// bound nothing.
func TestEventWithoutLimits(t *testing.T) {
	d, env := newLimitedDriver(t, EventLimits{})
	d.event(env)
	for i := 0; i < 50; i++ {
		runSteps(t, d, []step{{"put", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""}})
	}
	if len(env.reached) != 0 {
		t.Fatal(env.reached)
	}
}

// TestEventLogBudget: log records past the event's line or byte budget
// are dropped with -ErrnoLimit, reported once per event.
func TestEventLogBudget(t *testing.T) {
	rec := abi.AppendLogRecord(nil, &abi.LogRecord{Message: "hello"})
	n := uint64(len(rec))
	logStep := func(name string, want int64) step {
		return step{name, rec, "log_write", []uint64{1, offData, n}, want, ""}
	}
	d, env := newLimitedDriver(t, EventLimits{LogLines: 2})
	d.event(env)
	runSteps(t, d, []step{logStep("1", 0), logStep("2", 0), logStep("3", eLimit), logStep("4", eLimit)})
	if env.logs != 2 || len(env.reached) != 1 || !strings.Contains(env.reached[0], "event_log_lines is 2") {
		t.Fatalf("%d records logged, reached %q", env.logs, env.reached)
	}
	d.event(env)
	runSteps(t, d, []step{logStep("next event", 0)})

	d, env = newLimitedDriver(t, EventLimits{LogBytes: int64(2*n + 1)})
	d.event(env)
	runSteps(t, d, []step{logStep("1", 0), logStep("2", 0), logStep("3", eLimit)})
	if env.logs != 2 || len(env.reached) != 1 || !strings.Contains(env.reached[0], "event_log_bytes is") {
		t.Fatalf("%d records logged, reached %q", env.logs, env.reached)
	}
}

// TestBeginEventKnowsTheKind: an instance starts each event's budget,
// telling an alarm from a fetch.
func TestBeginEventKnowsTheKind(t *testing.T) {
	eng := newTestEngine(t, Config{})
	_, inst := startInstance(t, eng, wasmtest.Plugin().Bytes())
	env := &limitingEnv{fakeEnv: newFakeEnv(t)}
	if _, err := inst.Alarm(context.Background(), env, 0); err != nil || !env.alarm {
		t.Fatalf("Alarm: %v, alarm event %v", err, env.alarm)
	}
	if _, err := inst.Fetch(context.Background(), env, &abi.Request{Method: "GET", Path: "/"}); err != nil || env.alarm {
		t.Fatalf("Fetch: %v, alarm event %v", err, env.alarm)
	}
}

// TestUndefinedListFlagsRefused: ListOptions flag bits past bit 3 answer
// -ErrnoInvalid (they used to be ignored).
func TestUndefinedListFlagsRefused(t *testing.T) {
	d := newHostileDriver(t)
	opts := abi.AppendListOptions(nil, &abi.ListOptions{})
	opts[0] |= 0x10
	runSteps(t, d, []step{{"list with flag bit 4", opts, "storage_list", []uint64{offData, uint64(len(opts)), buf, 16}, eInvalid, ""}})
	if !strings.Contains(d.c.errMsg, "bits 0x10 are not defined") {
		t.Fatalf("message %q", d.c.errMsg)
	}
}

// TestHeldResultSurvivesAllButBufferReplies: exactly the calls ABI.md
// lists replace a held result — a successful call that answers through a
// buffer, whether its own result fits or not — and every other call,
// failures of those included, leaves it for result_take.
func TestHeldResultSurvivesAllButBufferReplies(t *testing.T) {
	keys := abi.AppendKeys(nil, []string{"k"})
	list := abi.AppendListOptions(nil, &abi.ListOptions{})
	kvs := abi.AppendKVs(nil, []abi.KV{{Key: "x", Value: []byte("y")}})
	stmts, _ := abi.AppendStatements(nil, []abi.Statement{{SQL: "SELECT 1"}})
	failing, _ := abi.AppendStatements(nil, []abi.Statement{{SQL: "FAIL"}})
	rec := abi.AppendLogRecord(nil, &abi.LogRecord{Message: "m"})
	point := abi.AppendDataPoint(nil, &abi.DataPoint{Doubles: []float64{1}})
	for _, tc := range []struct {
		call     step
		replaces bool
	}{
		{step{"storage_get found", nil, "storage_get", []uint64{offKey, 1, buf, 16}, 1, ""}, true},
		{step{"storage_get found, not fitting", nil, "storage_get", []uint64{offKey, 1, buf, 0}, 1, ""}, true},
		{step{"storage_get absent", nil, "storage_get", []uint64{offVar, 1, buf, 16}, eNotFound, ""}, false},
		{step{"storage_get_multi", keys, "storage_get_multi", []uint64{offData, uint64(len(keys)), buf, 64}, 14, ""}, true},
		{step{"storage_list", list, "storage_list", []uint64{offData, uint64(len(list)), buf, 64}, 14, ""}, true},
		{step{"var_get found", nil, "var_get", []uint64{offVar, 1, buf, 16}, 3, ""}, true},
		{step{"var_get unset", nil, "var_get", []uint64{offKey, 1, buf, 16}, eNotFound, ""}, false},
		{step{"sql_exec", stmts, "sql_exec", []uint64{offData, uint64(len(stmts)), buf, 256}, 42, ""}, true},
		{step{"sql_exec failing", failing, "sql_exec", []uint64{offData, uint64(len(failing)), buf, 256}, -int64(abi.ErrnoSQL), ""}, false},
		{step{"storage_put", nil, "storage_put", []uint64{offVar, 1, offVal, 1, 0}, 0, ""}, false},
		{step{"storage_put_multi", kvs, "storage_put_multi", []uint64{offData, uint64(len(kvs)), 0}, 0, ""}, false},
		{step{"storage_delete", nil, "storage_delete", []uint64{offVar, 1}, 0, ""}, false},
		{step{"storage_delete_multi", abi.AppendKeys(nil, []string{"zz"}), "storage_delete_multi", []uint64{offData, 10}, 0, ""}, false},
		{step{"alarm_set", nil, "alarm_set", []uint64{1e12}, 0, ""}, false},
		{step{"alarm_get", nil, "alarm_get", nil, eNotFound, ""}, false},
		{step{"alarm_delete", nil, "alarm_delete", nil, 0, ""}, false},
		{step{"log_write", rec, "log_write", []uint64{1, offData, uint64(len(rec))}, 0, ""}, false},
		{step{"analytics_write", point, "analytics_write", []uint64{offData, uint64(len(point))}, 0, ""}, false},
		{step{"error_message", nil, "error_message", []uint64{buf, 16}, 0, ""}, false},
		{step{"result_take into a small buffer", nil, "result_take", []uint64{buf, 0}, 1, ""}, false},
		{step{"result_take past memory", nil, "result_take", []uint64{oob, 16}, eFault, ""}, false},
	} {
		t.Run(tc.call.name, func(t *testing.T) {
			d := newHostileDriver(t)
			runSteps(t, d, []step{
				{"put k", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
				{"hold v", nil, "storage_get", []uint64{offKey, 1, buf, 0}, 1, ""},
				tc.call,
			})
			want := step{"the held v is still there", nil, "result_take", []uint64{buf, 16}, 1, "v"}
			if tc.replaces {
				want = step{"the held v was replaced", nil, "result_take", []uint64{buf, 16}, eNoResult, ""}
				if tc.call.args[len(tc.call.args)-1] == 0 { // its own result is held instead
					want = step{"its own result is held instead", nil, "result_take", []uint64{buf, 16}, 1, "v"}
				}
			}
			runSteps(t, d, []step{want})
		})
	}
	t.Run("a new event", func(t *testing.T) {
		d := newHostileDriver(t)
		runSteps(t, d, []step{
			{"put k", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
			{"hold v", nil, "storage_get", []uint64{offKey, 1, buf, 0}, 1, ""},
		})
		d.reset()
		runSteps(t, d, []step{{"dropped", nil, "result_take", []uint64{buf, 16}, eNoResult, ""}})
	})
}

// TestAllocReturningZeroEndsTheEvent: edgeshard_alloc answering 0 means it
// could not allocate: the event fails as a trap (500 shard_crashed) before
// the request is written over the guest's address 0, and the instance is
// discarded.
func TestAllocReturningZeroEndsTheEvent(t *testing.T) {
	eng := newTestEngine(t, Config{})
	m := wasmtest.Plugin()
	m.SetExport(abi.ExportAlloc, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}, Body: wasmtest.I32Const(0)})
	_, inst := startInstance(t, eng, m.Bytes())
	_, err := inst.Fetch(context.Background(), newFakeEnv(t), &abi.Request{Method: "POST", Path: "/", Body: []byte("request body")})
	if !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), "edgeshard_alloc(") || !strings.Contains(err.Error(), "returned 0") {
		t.Fatalf("Fetch = %v, want ErrTrap naming edgeshard_alloc returning 0", err)
	}
	if inst.Err() == nil {
		t.Fatal("instance still alive")
	}
}

// TestMemoryMaximumIsTheCap: a declared maximum above the cap (here 4 GiB)
// is accepted and lowered to the cap, like an undeclared one: the module
// reports it, and memory.grow past the cap answers -1.
func TestMemoryMaximumIsTheCap(t *testing.T) {
	eng := newTestEngine(t, Config{MemoryLimitMiB: 1}) // 16 pages
	for _, tc := range []struct {
		name    string
		max     int64
		wantMax uint32
	}{
		{"4 GiB declared", 65536, 16},
		{"none declared", -1, 16},
		{"below the cap", 8, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			m.Memory = &wasmtest.Limits{Min: 2, Max: tc.max}
			m.SetExport("grow", wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32},
				Body: wasmtest.Code(wasmtest.LocalGet(0), wasmtest.MemoryGrow())})
			mod, inst := startInstance(t, eng, m.Bytes())
			if mod.MemoryMinPages != 2 || mod.MemoryMaxPages != tc.wantMax {
				t.Fatalf("memory %d..%d pages, want 2..%d", mod.MemoryMinPages, mod.MemoryMaxPages, tc.wantMax)
			}
			grow := inst.mod.ExportedFunction("grow")
			if r, err := grow.Call(context.Background(), uint64(tc.wantMax-2)); err != nil || int32(r[0]) != 2 {
				t.Fatalf("grow to the maximum = %v, %v; want 2", r, err)
			}
			if r, err := grow.Call(context.Background(), 1); err != nil || int32(r[0]) != -1 {
				t.Fatalf("grow past the maximum = %v, %v; want -1", r, err)
			}
		})
	}
}

// TestImportsListedOnce: a function imported twice (a Go guest imports
// fd_write from its runtime and from package syscall) is listed once.
func TestImportsListedOnce(t *testing.T) {
	eng := newTestEngine(t, Config{})
	m := wasmtest.Plugin()
	fdWrite := wasmtest.FuncImport{Module: abi.WASIModule, Name: "fd_write", Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32, wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}}
	m.AddImport(fdWrite)
	m.AddImport(fdWrite)
	mod, _ := startInstance(t, eng, m.Bytes())
	if want := []string{"wasi_snapshot_preview1.fd_write"}; !slices.Equal(mod.Imports, want) {
		t.Fatalf("Imports = %q, want %q", mod.Imports, want)
	}
}

// TestLoadErrorsNameTheABIRule: refusals that used to assume a Go guest
// name the ABI's rule first (and the Go hint after it).
func TestLoadErrorsNameTheABIRule(t *testing.T) {
	eng := newTestEngine(t, Config{})
	for _, tc := range []struct {
		name   string
		mutate func(*wasmtest.Module)
		want   []string
	}{
		{"no _initialize", func(m *wasmtest.Module) { delete(m.Exports, abi.ExportInitialize) },
			[]string{`missing export "_initialize": a plugin must export _initialize () -> (), which the host runs first (abi/ABI.md, section 2); a Go plugin is built with GOOS=wasip1`}},
		{"no edgeshard_fetch", func(m *wasmtest.Module) { delete(m.Exports, abi.ExportFetch) },
			[]string{`missing export "edgeshard_fetch": a plugin must export edgeshard_fetch (i32, i32) -> (i64) (abi/ABI.md, section 2); a Go plugin gets it from the edgeshard SDK`}},
		{"init returns 1", func(m *wasmtest.Module) {
			m.SetExport(abi.ExportInit, wasmtest.Func{Results: []wasmtest.ValType{wasmtest.I32}, Body: wasmtest.I32Const(1)})
		}, []string{"edgeshard_init returned errno 1 (not found); a plugin is ready only when edgeshard_init returns 0 (abi/ABI.md, section 2) — a Go plugin must call sdk.Serve"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			tc.mutate(m)
			_, err := eng.Load(context.Background(), m.Bytes(), nil)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("Load = %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

// TestWASIInTheSandbox pins what abi/ABI.md says the WASI functions a
// plugin may import answer: no filesystem (no preopened directory, every
// descriptor but 0, 1, 2 is bad), stdin empty, clocks and randomness
// working, and no sleeping (poll_oneoff on a clock returns at once).
func TestWASIInTheSandbox(t *testing.T) {
	const (
		badf  = 8
		inval = 28
		nosys = 52
	)
	i32, i64 := wasmtest.I32, wasmtest.I64
	type wasiCall struct {
		name   string
		params []wasmtest.ValType
		args   []uint64
		want   int32
	}
	iov := uint64(wasmtest.Scratch) // one iovec {Scratch+64, 8} is written there
	calls := []wasiCall{
		{"fd_write", []wasmtest.ValType{i32, i32, i32, i32}, []uint64{1, iov, 1, iov + 32}, 0},
		{"fd_write", []wasmtest.ValType{i32, i32, i32, i32}, []uint64{3, iov, 1, iov + 32}, badf},
		{"fd_read", []wasmtest.ValType{i32, i32, i32, i32}, []uint64{0, iov, 1, iov + 32}, 0},
		{"fd_read", []wasmtest.ValType{i32, i32, i32, i32}, []uint64{3, iov, 1, iov + 32}, badf},
		{"fd_close", []wasmtest.ValType{i32}, []uint64{3}, badf},
		{"fd_prestat_get", []wasmtest.ValType{i32, i32}, []uint64{3, iov + 32}, badf},
		{"path_open", []wasmtest.ValType{i32, i32, i32, i32, i32, i64, i64, i32, i32}, []uint64{3, 0, iov + 64, 1, 0, 0, 0, 0, iov + 32}, badf},
		{"sock_accept", []wasmtest.ValType{i32, i32, i32}, []uint64{3, 0, iov + 32}, badf},
		{"args_sizes_get", []wasmtest.ValType{i32, i32}, []uint64{iov + 32, iov + 40}, 0},
		{"environ_sizes_get", []wasmtest.ValType{i32, i32}, []uint64{iov + 32, iov + 40}, 0},
		{"clock_time_get", []wasmtest.ValType{i32, i64, i32}, []uint64{0, 1, iov + 32}, 0},
		{"random_get", []wasmtest.ValType{i32, i32}, []uint64{iov + 32, 16}, 0},
		{"sched_yield", nil, nil, 0},
		{"poll_oneoff", []wasmtest.ValType{i32, i32, i32, i32}, []uint64{0x2000, 0x2100, 1, iov + 32}, 0},
		{"poll_oneoff", []wasmtest.ValType{i32, i32, i32, i32}, []uint64{0x2000, 0x2100, 0, iov + 32}, inval},
		{"sock_shutdown", []wasmtest.ValType{i32, i32}, []uint64{3, 0}, badf},
		{"proc_raise", []wasmtest.ValType{i32}, []uint64{1}, nosys},
	}
	m := wasmtest.Plugin()
	m.Memory = &wasmtest.Limits{Min: 1, Max: -1}
	for _, c := range calls {
		if !slices.ContainsFunc(m.Imports, func(im wasmtest.FuncImport) bool { return im.Name == c.name }) {
			m.AddImport(wasmtest.FuncImport{Module: abi.WASIModule, Name: c.name, Params: c.params, Results: []wasmtest.ValType{i32}})
		}
	}
	for _, c := range calls {
		var body []byte
		for i := range c.params {
			body = append(body, wasmtest.LocalGet(uint32(i))...)
		}
		m.SetExport("w_"+c.name, wasmtest.Func{Params: c.params, Results: []wasmtest.ValType{i32}, Body: wasmtest.Code(body, wasmtest.Call(m.Import(abi.WASIModule, c.name)))})
	}
	// The iovec, and a relative clock subscription of one hour at 0x2000.
	m.Data = append(m.Data,
		wasmtest.Data{Offset: wasmtest.Scratch, Bytes: binary.LittleEndian.AppendUint32(le32(wasmtest.Scratch+64), 8)},
		wasmtest.Data{Offset: 0x2000 + 8, Bytes: []byte{0}},                                                 // eventtype clock
		wasmtest.Data{Offset: 0x2000 + 24, Bytes: binary.LittleEndian.AppendUint64(nil, uint64(time.Hour))}, // timeout
	)
	eng := newTestEngine(t, Config{})
	_, inst := startInstance(t, eng, m.Bytes())
	for _, c := range calls {
		t0 := time.Now()
		r, err := inst.mod.ExportedFunction("w_"+c.name).Call(context.Background(), c.args...)
		if err != nil {
			t.Fatalf("%s%v trapped: %v", c.name, c.args, err)
		}
		if got := int32(r[0]); got != c.want {
			t.Errorf("%s%v = %d, want %d", c.name, c.args, got, c.want)
		}
		if d := time.Since(t0); d > time.Second {
			t.Errorf("%s took %v: a guest must not be able to sleep", c.name, d)
		}
	}
}
