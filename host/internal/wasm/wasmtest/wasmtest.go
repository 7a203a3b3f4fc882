// Package wasmtest writes small WebAssembly binaries byte by byte, for tests
// that feed the host hostile or malformed plugins: a Go guest cannot have a
// wrong export signature, an imported memory or a start function that
// loops, but a hand-made module can. Plugin returns a minimal, valid
// edgeshard plugin whose parts a test then breaks one at a time.
//
// Only what those tests need is supported: function types of i32/i64,
// function and memory imports, one memory, exports, a start function, code
// and active data segments.
package wasmtest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/edgeshard/edgeshard/host/internal/wasm/leb128"
)

// ValType is a WebAssembly value type.
type ValType byte

// Value types.
const (
	I32 ValType = 0x7f
	I64 ValType = 0x7e
)

// Func is a function: its signature, extra locals and body (the
// instructions without the final end).
type Func struct {
	Params, Results []ValType
	Locals          []ValType
	Body            []byte
}

// FuncImport is an imported function; imports take function indexes
// 0..n-1 in order, before every defined function.
type FuncImport struct {
	Module, Name    string
	Params, Results []ValType
}

// Data is an active data segment written at Offset of memory 0.
type Data struct {
	Offset uint32
	Bytes  []byte
}

// Limits are a memory's page counts; Max < 0 means no maximum.
type Limits struct {
	Min uint32
	Max int64
}

// Module describes a whole module. Funcs are defined functions (indexes
// after the imports); Exports maps an export name to the index of a
// function (imports first, then Funcs).
type Module struct {
	Imports      []FuncImport
	ImportMemory *FuncImport // an imported memory (Params/Results unused)
	Funcs        []Func
	Memory       *Limits
	Tables       []Limits // funcref tables
	MemoryExport string   // "" exports no memory
	Exports      map[string]uint32
	Start        *uint32 // the wasm start section
	Data         []Data
}

// Bytes encodes the module.
func (m *Module) Bytes() []byte {
	var types [][]byte
	typeIdx := func(params, results []ValType) uint32 {
		t := []byte{0x60}
		t = appendVec(t, len(params), func(b []byte, i int) []byte { return append(b, byte(params[i])) })
		t = appendVec(t, len(results), func(b []byte, i int) []byte { return append(b, byte(results[i])) })
		for i, have := range types {
			if bytes.Equal(have, t) {
				return uint32(i)
			}
		}
		types = append(types, t)
		return uint32(len(types) - 1)
	}
	var imports []byte
	n := len(m.Imports)
	if m.ImportMemory != nil {
		n++
	}
	imports = U32(imports, uint32(n))
	for _, im := range m.Imports {
		imports = Name(imports, im.Module)
		imports = Name(imports, im.Name)
		imports = append(imports, 0x00)
		imports = U32(imports, typeIdx(im.Params, im.Results))
	}
	if im := m.ImportMemory; im != nil {
		imports = Name(imports, im.Module)
		imports = Name(imports, im.Name)
		imports = append(imports, 0x02, 0x00)
		imports = U32(imports, 1)
	}
	funcs := appendVec(nil, len(m.Funcs), func(b []byte, i int) []byte {
		return U32(b, typeIdx(m.Funcs[i].Params, m.Funcs[i].Results))
	})
	code := appendVec(nil, len(m.Funcs), func(b []byte, i int) []byte {
		f := m.Funcs[i]
		var body []byte
		body = appendVec(body, len(f.Locals), func(b []byte, j int) []byte {
			return append(U32(b, 1), byte(f.Locals[j]))
		})
		body = append(body, f.Body...)
		body = append(body, OpEnd)
		return append(U32(b, uint32(len(body))), body...)
	})
	names := slices.Sorted(maps.Keys(m.Exports))
	nexp := len(names)
	if m.MemoryExport != "" {
		nexp++
	}
	exports := U32(nil, uint32(nexp))
	for _, name := range names {
		exports = Name(exports, name)
		exports = append(exports, 0x00)
		exports = U32(exports, m.Exports[name])
	}
	if m.MemoryExport != "" {
		exports = Name(exports, m.MemoryExport)
		exports = append(exports, 0x02, 0x00)
	}

	out := []byte("\x00asm\x01\x00\x00\x00")
	typeSec := appendVec(nil, len(types), func(b []byte, i int) []byte { return append(b, types[i]...) })
	out = section(out, 1, typeSec)
	if n > 0 {
		out = section(out, 2, imports)
	}
	out = section(out, 3, funcs)
	if len(m.Tables) > 0 {
		s := appendVec(nil, len(m.Tables), func(b []byte, i int) []byte {
			return appendLimits(append(b, 0x70), m.Tables[i])
		})
		out = section(out, 4, s)
	}
	if mem := m.Memory; mem != nil {
		out = section(out, 5, appendLimits(U32(nil, 1), *mem))
	}
	out = section(out, 7, exports)
	if m.Start != nil {
		out = section(out, 8, U32(nil, *m.Start))
	}
	out = section(out, 10, code)
	if len(m.Data) > 0 {
		d := appendVec(nil, len(m.Data), func(b []byte, i int) []byte {
			b = append(b, 0x00)
			b = append(b, I32Const(int32(m.Data[i].Offset))...)
			b = append(b, OpEnd)
			return append(U32(b, uint32(len(m.Data[i].Bytes))), m.Data[i].Bytes...)
		})
		out = section(out, 11, d)
	}
	return out
}

func appendLimits(b []byte, l Limits) []byte {
	if l.Max < 0 {
		return U32(append(b, 0x00), l.Min)
	}
	return U32(U32(append(b, 0x01), l.Min), uint32(l.Max))
}

func section(out []byte, id byte, content []byte) []byte {
	out = append(out, id)
	out = U32(out, uint32(len(content)))
	return append(out, content...)
}

func appendVec(b []byte, n int, elem func([]byte, int) []byte) []byte {
	b = U32(b, uint32(n))
	for i := 0; i < n; i++ {
		b = elem(b, i)
	}
	return b
}

// U32 appends v as unsigned LEB128.
func U32(b []byte, v uint32) []byte { return leb128.AppendUint(b, uint64(v)) }

// S64 appends v as signed LEB128.
func S64(b []byte, v int64) []byte { return leb128.AppendInt(b, v) }

// Name appends a length-prefixed UTF-8 name.
func Name(b []byte, s string) []byte { return append(U32(b, uint32(len(s))), s...) }

// Opcodes used by the helpers and by tests.
const (
	OpUnreachable = 0x00
	OpBlock       = 0x02
	OpLoop        = 0x03
	OpIf          = 0x04
	OpElse        = 0x05
	OpEnd         = 0x0b
	OpBr          = 0x0c
	OpBrIf        = 0x0d
	OpReturn      = 0x0f
	OpCall        = 0x10
	OpDrop        = 0x1a
	OpLocalGet    = 0x20
	OpLocalSet    = 0x21
	OpI32Load     = 0x28
	OpI64Load     = 0x29
	OpI32Store    = 0x36
	OpI64Store    = 0x37
	OpI32Store8   = 0x3a
	OpMemorySize  = 0x3f
	OpMemoryGrow  = 0x40
	OpI32Const    = 0x41
	OpI64Const    = 0x42
	OpI32Eqz      = 0x45
	OpI32Eq       = 0x46
	OpI64GtS      = 0x55
	OpI32Add      = 0x6a
	OpI64Or       = 0x84
	OpI64Shl      = 0x86
	OpI64ExtendS  = 0xac // i64.extend_i32_s
	OpI64ExtendU  = 0xad // i64.extend_i32_u
	blockEmpty    = 0x40
)

// Code concatenates instruction fragments.
func Code(parts ...[]byte) []byte { return slices.Concat(parts...) }

// I32Const is i32.const v.
func I32Const(v int32) []byte { return S64([]byte{OpI32Const}, int64(v)) }

// I64Const is i64.const v.
func I64Const(v int64) []byte { return S64([]byte{OpI64Const}, v) }

// Call is call idx.
func Call(idx uint32) []byte { return U32([]byte{OpCall}, idx) }

// LocalGet is local.get i.
func LocalGet(i uint32) []byte { return U32([]byte{OpLocalGet}, i) }

// LocalSet is local.set i.
func LocalSet(i uint32) []byte { return U32([]byte{OpLocalSet}, i) }

// Mem is a memory instruction with alignment 0 and a static offset.
func Mem(op byte, offset uint32) []byte { return U32([]byte{op, 0x00}, offset) }

// MemoryGrow is memory.grow 0: pages on the stack in, old size or -1 out.
func MemoryGrow() []byte { return []byte{OpMemoryGrow, 0x00} }

// TableGrow is table.grow 0 (0xfc 15): a reference and a count on the
// stack in, the old size or -1 out.
func TableGrow() []byte { return []byte{0xfc, 15, 0x00} }

// RefNullFunc is ref.null func.
func RefNullFunc() []byte { return []byte{0xd0, 0x70} }

// Op is a single opcode without immediates.
func Op(op byte) []byte { return []byte{op} }

// Forever is a loop that never ends: loop br 0 end, then unreachable so
// it type-checks wherever results are expected.
func Forever() []byte { return []byte{OpLoop, blockEmpty, OpBr, 0x00, OpEnd, OpUnreachable} }

// SectionEnds returns the offsets at which each section of a well-formed
// binary ends: the prefixes of a module that are themselves modules.
func SectionEnds(bin []byte) []int {
	var ends []int
	off := 8
	for off < len(bin) {
		off++ // id
		var size, shift uint32
		for {
			c := bin[off]
			off++
			size |= uint32(c&0x7f) << shift
			shift += 7
			if c&0x80 == 0 {
				break
			}
		}
		off += int(size)
		ends = append(ends, off)
	}
	return ends
}

// Loop wraps body in loop ... br 0 end: body runs until it leaves by a trap
// or return.
func Loop(body ...[]byte) []byte {
	return Code([]byte{OpLoop, blockEmpty}, Code(body...), []byte{OpBr, 0x00, OpEnd})
}

// If is if (empty block type) body end, consuming an i32 condition.
func If(body ...[]byte) []byte {
	return Code([]byte{OpIf, blockEmpty}, Code(body...), []byte{OpEnd})
}

// Packed returns the i64 an edgeshard_fetch export answers: ptr<<32 | len.
func Packed(ptr, n uint32) int64 { return int64(uint64(ptr)<<32 | uint64(n)) }

// Layout of the guest memory of Plugin.
const (
	// RespOK holds the encoded response 200 "ok".
	RespOK = 0x100
	// Scratch is free memory for tests (0x400..0x1000).
	Scratch = 0x400
	// ReqBuf is where edgeshard_alloc puts requests.
	ReqBuf = 0x1000
)

// OKResponse is the encoding Plugin's fetch returns: status 200, no
// headers, body "ok".
var OKResponse = EncodeResponse(200, 0, []byte("ok"))

// EncodeResponse encodes a response with nheaders empty headers.
func EncodeResponse(status uint32, nheaders int, body []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, status)
	b = binary.LittleEndian.AppendUint32(b, uint32(nheaders))
	for i := 0; i < nheaders; i++ {
		b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

// Export names of Plugin's functions, in the index order of Plugin.Funcs.
var pluginExports = []string{"_initialize", "edgeshard_abi_version", "edgeshard_init", "edgeshard_alloc", "edgeshard_fetch", "edgeshard_alarm"}

// Plugin returns a minimal valid edgeshard plugin (ABI v1) with no imports:
// two pages of memory exported as "memory", _initialize doing nothing,
// edgeshard_abi_version returning 1, edgeshard_init 0, edgeshard_alloc
// ReqBuf, edgeshard_fetch the OKResponse at RespOK, edgeshard_alarm 0.
// Change its parts with SetExport, AddImport and the Module fields.
func Plugin() *Module {
	m := &Module{
		Memory:       &Limits{Min: 2, Max: -1},
		MemoryExport: "memory",
		Exports:      map[string]uint32{},
		Data:         []Data{{Offset: RespOK, Bytes: OKResponse}},
	}
	defs := []Func{
		{},
		{Results: []ValType{I32}, Body: I32Const(1)},
		{Results: []ValType{I32}, Body: I32Const(0)},
		{Params: []ValType{I32}, Results: []ValType{I32}, Body: I32Const(ReqBuf)},
		{Params: []ValType{I32, I32}, Results: []ValType{I64}, Body: I64Const(Packed(RespOK, uint32(len(OKResponse))))},
		{Params: []ValType{I32}, Results: []ValType{I32}, Body: I32Const(0)},
	}
	for i, f := range defs {
		m.Funcs = append(m.Funcs, f)
		m.Exports[pluginExports[i]] = uint32(i)
	}
	return m
}

// SetExport replaces the function behind an export (defining a new
// function) and returns its index. Call AddImport first: imports shift
// every defined function's index.
func (m *Module) SetExport(name string, f Func) uint32 {
	m.Funcs = append(m.Funcs, f)
	idx := uint32(len(m.Imports) + len(m.Funcs) - 1)
	m.Exports[name] = idx
	return idx
}

// AddImport adds a function import and returns its index, shifting the
// indexes of defined functions (exports and Start are adjusted).
func (m *Module) AddImport(im FuncImport) uint32 {
	nImports := uint32(len(m.Imports))
	for name, idx := range m.Exports {
		if idx >= nImports {
			m.Exports[name] = idx + 1
		}
	}
	if m.Start != nil && *m.Start >= nImports {
		s := *m.Start + 1
		m.Start = &s
	}
	m.Imports = append(m.Imports, im)
	return nImports
}

// Import returns the index of an already added import, or panics.
func (m *Module) Import(module, name string) uint32 {
	for i, im := range m.Imports {
		if im.Module == module && im.Name == name {
			return uint32(i)
		}
	}
	panic(fmt.Sprintf("wasmtest: no import %s.%s", module, name))
}

var hostSigs = map[string][2][]ValType{
	"result_take":          {{I32, I32}, {I64}},
	"error_message":        {{I32, I32}, {I64}},
	"fetch_respond":        {{I32, I32}, {I32}},
	"storage_get":          {{I32, I32, I32, I32}, {I64}},
	"storage_get_multi":    {{I32, I32, I32, I32}, {I64}},
	"storage_put":          {{I32, I32, I32, I32, I32}, {I32}},
	"storage_put_multi":    {{I32, I32, I32}, {I32}},
	"storage_delete":       {{I32, I32}, {I32}},
	"storage_delete_multi": {{I32, I32}, {I64}},
	"storage_list":         {{I32, I32, I32, I32}, {I64}},
	"storage_delete_all":   {nil, {I32}},
	"alarm_set":            {{I64}, {I32}},
	"alarm_get":            {nil, {I64}},
	"alarm_delete":         {nil, {I32}},
	"var_get":              {{I32, I32, I32, I32}, {I64}},
	"log_write":            {{I32, I32, I32}, {I32}},
	"sql_exec":             {{I32, I32, I32, I32}, {I64}},
	"analytics_write":      {{I32, I32}, {I32}},
	"ws_accept":            {{I32, I32, I32, I32}, {I64}},
	"ws_send":              {{I64, I32, I32, I32}, {I32}},
	"ws_broadcast":         {{I32, I32, I32, I32, I32}, {I64}},
	"ws_close":             {{I64, I32, I32, I32}, {I32}},
	"ws_list":              {{I32, I32, I32, I32}, {I64}},
	"ws_set_attachment":    {{I64, I32, I32}, {I32}},
	"ws_set_auto_response": {{I32, I32, I32, I32}, {I32}},
	"shard_call":           {{I32, I32, I32, I32}, {I64}},
	"http_fetch":           {{I32, I32, I32, I32}, {I64}},
}

// HostImport returns the import of the edgeshard host function name with
// its ABI v1 signature (abi/ABI.md, section 7), or panics.
func HostImport(name string) FuncImport {
	s, ok := hostSigs[name]
	if !ok {
		panic("wasmtest: unknown host function " + name)
	}
	return FuncImport{Module: "edgeshard", Name: name, Params: s[0], Results: s[1]}
}

// HostFunctions lists the names HostImport knows, sorted.
func HostFunctions() []string {
	return slices.Sorted(maps.Keys(hostSigs))
}

// WASI imports a test module may use.
var (
	ProcExit     = FuncImport{Module: "wasi_snapshot_preview1", Name: "proc_exit", Params: []ValType{I32}}
	ClockTimeGet = FuncImport{Module: "wasi_snapshot_preview1", Name: "clock_time_get", Params: []ValType{I32, I64, I32}, Results: []ValType{I32}}
)

// HostCall is one host function call CallsPlugin makes, with constant
// arguments (one per parameter of the function).
type HostCall struct {
	Fn   string
	Args []int64
}

// callsResp is where CallsPlugin builds its response.
const callsResp = 0x8000

// CallsPlugin returns Plugin whose fetch makes the calls in order and
// answers 200 with every result as a little-endian i64 in the body (i32
// results sign-extended); CallResults decodes it. Tests put the bytes the
// calls point at into Data.
func CallsPlugin(calls []HostCall) *Module {
	m := Plugin()
	for _, c := range calls {
		im := HostImport(c.Fn)
		if !slices.ContainsFunc(m.Imports, func(x FuncImport) bool { return x.Name == im.Name }) {
			m.AddImport(im)
		}
	}
	var body []byte
	for i, c := range calls {
		im := HostImport(c.Fn)
		if len(c.Args) != len(im.Params) {
			panic(fmt.Sprintf("wasmtest: %s takes %d arguments, got %d", c.Fn, len(im.Params), len(c.Args)))
		}
		body = append(body, I32Const(int32(callsResp+12+8*i))...)
		for j, p := range im.Params {
			if p == I64 {
				body = append(body, I64Const(c.Args[j])...)
			} else {
				body = append(body, I32Const(int32(uint32(c.Args[j])))...)
			}
		}
		body = append(body, Call(m.Import(im.Module, im.Name))...)
		if im.Results[0] == I32 {
			body = append(body, OpI64ExtendS)
		}
		body = append(body, Mem(OpI64Store, 0)...)
	}
	n := uint32(12 + 8*len(calls))
	body = append(body, I64Const(Packed(callsResp, n))...)
	m.Data = append(m.Data, Data{Offset: callsResp, Bytes: EncodeResponse(200, 0, make([]byte, 8*len(calls)))})
	m.SetExport("edgeshard_fetch", Func{Params: []ValType{I32, I32}, Results: []ValType{I64}, Body: body})
	return m
}

// CallResults decodes the body of a CallsPlugin response.
func CallResults(body []byte) []int64 {
	out := make([]int64, len(body)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(body[8*i:]))
	}
	return out
}

// InitSpinsAfter returns Plugin whose edgeshard_init spins forever when
// the guest's wall clock reads after t: it passes the host's load probe (on
// the real clock) and hangs when a shard on a virtual clock past t starts.
func InitSpinsAfter(t time.Time) *Module {
	m := Plugin()
	clk := m.AddImport(ClockTimeGet)
	m.SetExport("edgeshard_init", Func{Results: []ValType{I32}, Body: Code(
		I32Const(0), I64Const(1), I32Const(Scratch), Call(clk), Op(OpDrop), // realtime → Scratch
		I32Const(Scratch), Mem(OpI64Load, 0), I64Const(t.UnixNano()), Op(OpI64GtS),
		If(Forever()),
		I32Const(0),
	)})
	return m
}
