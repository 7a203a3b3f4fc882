package wasmtest

import (
	"bytes"
	"runtime"
)

// Modules shared by the tests of the binary checks (package wasmbin, which
// must refuse or rewrite them) and of the engine (package wasm, which must
// refuse them at load, or run them).

// DriverPlugin returns Plugin with pages of memory that imports every host
// function HostFunctions lists and exports, for each function fn:
//
//   - call_<fn>, with fn's parameters and an i64 result: it calls fn with
//     its arguments and returns fn's result (an i32 one sign-extended), so
//     a test can pass any arguments, as a hostile guest would;
//   - loop_<fn>(n i32, fn's parameters): it calls fn n times with the same
//     arguments and drops the results (n = 0 loops 2^32 times), so a
//     benchmark measures host calls without entering the guest for each.
func DriverPlugin(pages uint32) *Module {
	m := Plugin()
	m.Memory = &Limits{Min: pages, Max: -1}
	for _, name := range HostFunctions() {
		m.AddImport(HostImport(name))
	}
	for _, name := range HostFunctions() {
		im := HostImport(name)
		var args []byte
		for i := range im.Params {
			args = append(args, LocalGet(uint32(i))...)
		}
		body := Code(args, Call(m.Import(im.Module, im.Name)))
		if im.Results[0] == I32 {
			body = append(body, OpI64ExtendS)
		}
		m.SetExport("call_"+name, Func{Params: im.Params, Results: []ValType{I64}, Body: body})

		args = args[:0]
		for i := range im.Params {
			args = append(args, LocalGet(uint32(i+1))...)
		}
		m.SetExport("loop_"+name, Func{Params: append([]ValType{I32}, im.Params...), Body: Code(
			[]byte{OpLoop, blockEmpty},
			args, Call(m.Import(im.Module, im.Name)), Op(OpDrop),
			LocalGet(0), I32Const(1), Op(0x6b), []byte{0x22, 0x00}, // n-- (i32.sub, local.tee 0)
			[]byte{OpBrIf, 0x00, OpEnd},
		)})
	}
	return m
}

// AllocationBombs returns binaries of a few bytes whose sections claim
// billions of elements or bytes, or that wazero 1.12's decoder otherwise
// trusts: each of them, handed to wazero, ended the process with a fatal
// out-of-memory or made it allocate 4 GiB. A host must refuse every one as
// a malformed binary before wazero decodes it. The keys name the bomb.
func AllocationBombs() map[string][]byte {
	const hdr = "\x00asm\x01\x00\x00\x00"
	ff := "\xff\xff\xff\xff\x0f" // LEB128 2^32-1
	sec := func(id byte, content string) string {
		return string(append([]byte{id}, U32(nil, uint32(len(content)))...)) + content
	}
	bombs := map[string]string{
		"2^32-1 imports":             sec(2, ff),
		"2^32-1 exports":             sec(7, ff),
		"2^32-1 functions":           sec(3, ff),
		"2^32-1 globals":             sec(6, ff),
		"2^32-1 types":               sec(1, ff),
		"2^32-1 results":             sec(1, "\x01\x60\x00"+ff),
		"export name of 4 GiB":       sec(7, "\x01"+ff),
		"import module of 4 GiB":     sec(2, "\x01"+ff),
		"2^32-1 locals":              sec(1, "\x01\x60\x00\x00") + sec(3, "\x01\x00") + sec(10, "\x01\x08\x01"+ff+"\x7f\x0b"),
		"function body of 4 GiB":     sec(1, "\x01\x60\x00\x00") + sec(3, "\x01\x00") + sec(10, "\x01"+ff),
		"data segment of 4 GiB":      sec(11, "\x01\x00\x41\x00\x0b"+ff),
		"2^32-1 element entries":     sec(9, "\x01\x00\x41\x00\x0b"+ff),
		"2^32-1 function names":      sec(0, "\x04name\x01\x05"+ff),
		"2^32-1 local names":         sec(0, "\x04name\x02\x07\x01\x00"+ff),
		"custom section name of 4G":  sec(0, ff),
		"section of 4 GiB":           "\x0a" + ff,
		"table of 2^32-1 entries":    sec(4, "\x01\x70\x00"+ff),
		"memory64 limits":            sec(5, "\x01\x04\x01"),
		"long LEB128":                sec(3, "\xff\xff\xff\xff\xff\xff\x00"),
		"unknown constant opcode":    sec(6, "\x01\x7f\x00\x10\x00\x0b"),
		"unknown element flags":      sec(9, "\x01\x08"),
		"leftover bytes in sections": sec(3, "\x00\x00"),
	}
	out := make(map[string][]byte, len(bombs))
	for name, bin := range bombs {
		out[name] = []byte(hdr + bin)
	}
	return out
}

// Refusal is a module a host must refuse at load, and a part of the
// reason it must give.
type Refusal struct {
	Name   string
	Module *Module
	Want   string
}

// Uninstrumentable returns plugins the interrupt rewrite must refuse: one
// whose code names a global it does not define (after the rewrite that
// index could be the interrupt flag), and ones exporting a name the
// rewrite reserves (edgeshard_interrupt, edgeshard_start_section).
func Uninstrumentable() []Refusal {
	undefined := Plugin()
	undefined.SetExport("edgeshard_alarm", Func{Params: []ValType{I32}, Results: []ValType{I32},
		Body: Code(I32Const(0), []byte{0x24, 0x00}, I32Const(0))}) // global.set 0
	out := []Refusal{{"global.set of an undefined global", undefined, "global 0 does not exist (the module has 0)"}}
	for _, name := range []string{"edgeshard_interrupt", "edgeshard_start_section"} {
		m := Plugin()
		m.Exports[name] = m.Exports["_initialize"]
		out = append(out, Refusal{"reserved export " + name, m, `exports "` + name + `", a name the host reserves`})
	}
	return out
}

// EveryImmediate returns the body of a function of type (i32) -> i32 that
// uses every kind of immediate the interrupt rewrite must step over (block
// types, br_table, memargs, constants, bulk memory, SIMD, typed select),
// and how many loops it has. It runs to its end and returns 3.
func EveryImmediate() (body []byte, loops int) {
	v128 := func(b byte) []byte { return append([]byte{0xfd, 12}, bytes.Repeat([]byte{b}, 16)...) }
	shuffle := append([]byte{0xfd, 13}, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}...)
	return Code(
		[]byte{0x02, 0x40, 0x03, 0x40},                    // block, loop
		I32Const(0), []byte{0x0e, 0x02, 0x01, 0x00, 0x01}, // br_table [1 0] 1: out of the block
		[]byte{0x0b, 0x0b},                                            // end, end
		I32Const(0), I32Const(0), I32Const(0), []byte{0xfc, 10, 0, 0}, // memory.copy
		I32Const(0), I32Const(0), I32Const(0), []byte{0xfc, 11, 0}, // memory.fill
		[]byte{0x43, 0, 0, 0x80, 0x3f, 0x1a},             // f32.const 1 drop
		[]byte{0x44, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x1a}, // f64.const 1 drop
		I64Const(-1<<40), []byte{0x1a},
		v128(1), v128(2), shuffle, []byte{0xfd, 27, 0}, []byte{0x1a}, // i32x4.extract_lane 0, drop
		I32Const(0), []byte{0xfd, 0, 0x04, 0x00, 0x1a}, // v128.load, drop
		[]byte{0x03, 0x7f}, I32Const(7), []byte{0x0b, 0x1a}, // loop (result i32) 7 end drop
		I32Const(1), I32Const(2), I32Const(1), []byte{0x1c, 0x01, 0x7f}, // select (result i32)
		[]byte{0x04, 0x7f}, I32Const(3), []byte{0x05}, I32Const(4), []byte{0x0b}, // if/else (result i32)
	), 2
}

// AllocBytes reports how many bytes of Go heap were allocated while fn
// ran (runtime.MemStats.TotalAlloc, process-wide: other goroutines count
// too), for tests bounding what refusing a hostile input may cost.
func AllocBytes(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}
