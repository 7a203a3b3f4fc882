package wasm

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/tetratelabs/wazero"
)

type zzStore struct{ m map[string][]byte }

func (s *zzStore) Get(k string) ([]byte, bool, error)       { v, ok := s.m[k]; return v, ok, nil }
func (s *zzStore) GetMulti(keys []string) ([]abi.KV, error) { return nil, nil }
func (s *zzStore) Put(k string, v []byte, u bool) error {
	s.m[k] = append([]byte(nil), v...)
	return nil
}
func (s *zzStore) PutMulti(kvs []abi.KV, u bool) error      { return nil }
func (s *zzStore) Delete(k string) (bool, error)            { return false, nil }
func (s *zzStore) DeleteMulti(keys []string) (int, error)   { return 0, nil }
func (s *zzStore) List(o abi.ListOptions) ([]abi.KV, error) { return nil, nil }
func (s *zzStore) DeleteAll() error                         { return nil }

type zzEnv struct{ s *zzStore }

func (e zzEnv) Store() Store                                               { return e.s }
func (e zzEnv) SetAlarm(int64) error                                       { return nil }
func (e zzEnv) GetAlarm() (int64, bool, error)                             { return 0, false, nil }
func (e zzEnv) DeleteAlarm() error                                         { return nil }
func (e zzEnv) Var(string) (string, bool)                                  { return "", false }
func (e zzEnv) Log(int32, abi.LogRecord)                                   {}
func (e zzEnv) SQL(context.Context, []abi.Statement) ([]abi.Result, error) { return nil, nil }
func (e zzEnv) WriteDataPoint(abi.DataPoint) error                         { return nil }

func BenchmarkZZCounter(b *testing.B) {
	ctx := context.Background()
	e, err := NewEngine(ctx, Config{CacheDir: testutil.CacheDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close(ctx)
	pkg := os.Getenv("ZZPKG")
	if pkg == "" {
		pkg = "examples/counter"
	}
	bin, _ := os.ReadFile(testutil.Plugin(b, pkg))
	m, err := e.Load(ctx, bin, []string{"storage", "alarm", "vars", "log"})
	if err != nil {
		b.Fatal(err)
	}
	inst, err := m.Instantiate(ctx, InstanceConfig{})
	if err != nil {
		b.Fatal(err)
	}
	env := zzEnv{&zzStore{m: map[string][]byte{}}}
	path := os.Getenv("ZZPATH")
	if path == "" {
		path = "/increment"
	}
	body := []byte(os.Getenv("ZZBODY"))
	for _, mode := range []string{"bg", "timeout"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				c := ctx
				var cancel context.CancelFunc
				if mode == "timeout" {
					c, cancel = context.WithTimeout(ctx, 10*time.Second)
				}
				resp, err := inst.Fetch(c, env, &abi.Request{Method: "POST", Path: path, Body: body})
				if cancel != nil {
					cancel()
				}
				if err != nil || resp.Status >= 300 {
					b.Fatal(err, resp)
				}
			}
		})
	}
}

func BenchmarkZZAlloc(b *testing.B) {
	ctx := context.Background()
	e, err := NewEngine(ctx, Config{CacheDir: testutil.CacheDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close(ctx)
	bin, _ := os.ReadFile(testutil.Plugin(b, "examples/counter"))
	m, err := e.Load(ctx, bin, []string{"storage", "alarm", "vars", "log"})
	if err != nil {
		b.Fatal(err)
	}
	inst, err := m.Instantiate(ctx, InstanceConfig{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		inst.stack[0] = 100
		if err := inst.fnAlloc.CallWithStack(ctx, inst.stack[:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkZZRawNop(b *testing.B) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(os.Getenv("ZZCLOSE") != ""))
	defer rt.Close(ctx)
	m := &wasmtest.Module{
		Funcs:   []wasmtest.Func{{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}, Body: []byte{0x20, 0x00}}},
		Memory:  &wasmtest.Limits{Min: 1, Max: 10},
		Exports: map[string]uint32{"f": 0},
	}
	mod, err := rt.Instantiate(ctx, m.Bytes())
	if err != nil {
		b.Fatal(err)
	}
	fn := mod.ExportedFunction("f")
	var st [1]uint64
	for i := 0; i < b.N; i++ {
		if err := fn.CallWithStack(ctx, st[:]); err != nil {
			b.Fatal(err)
		}
	}
}
