package wasmbin

import (
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/host/internal/wasm/leb128"
)

// Names Instrument adds to the exports of every module; a module may not
// export them itself.
const (
	// InterruptExport is the interrupt flag, a mutable i32 global: the
	// guest traps at its next loop check once the host sets it to 1.
	InterruptExport = "edgeshard_interrupt"
	// StartExport is the function of the module's start section, if it has
	// one: the section is removed and the host calls the function itself,
	// under its interrupter, before _initialize (wazero would run it
	// inside InstantiateModule, before the flag can be reached).
	StartExport = "edgeshard_start_section"
)

// The module rewrite behind the host's guest deadlines.
//
// wazero's own mechanism (RuntimeConfig.WithCloseOnContextDone) makes the
// compiled code leave for Go at every loop header to ask whether the module
// was closed, and starts a goroutine per exported-function call. A Go
// guest's compiler wraps every function that branches in a loop it
// re-enters on each jump between basic blocks, so a Go guest left its
// machine code thousands of times per event: ~90% of an event's CPU
// (docs/BENCHMARKS.md, wazero issue #2466).
//
// Instead, the engine rewrites each module before compiling it (Instrument):
// it appends two mutable i32 globals — the interrupt flag, exported as
// InterruptExport, and a budget of loop iterations — and inserts at the top
// of every loop a decrement of the budget; when it runs out (every
// checkEvery iterations) the guest leaves its machine code for Go once (a
// memory.grow of 0 pages), traps if the flag is raised, and refills the
// budget (loopCheck). The per-iteration cost is a few instructions on a
// global; the exit to Go every checkEvery iterations is also what lets the
// Go runtime preempt the goroutine running the guest (see loopCheck). The
// run-time half, raising the flag when a call's context is done, is the
// interrupter of package wasm.
//
// The pass refuses a module whose code names a global index it does not
// define: after the rewrite that index could name the interrupt flag, and a
// guest that can clear it cannot be stopped.

// Instrument returns bin with the interrupt flag, the loop budget and the
// loop checks added, its start section (if any) removed and its function
// exported as StartExport. bin must have passed Preflight. A module without
// a memory is returned unchanged: the checks need one, and the engine
// refuses such a module anyway, naming the export it lacks.
func Instrument(bin []byte) ([]byte, error) {
	var (
		secs            []span
		importedGlobals uint32
		definedGlobals  uint32
		exportCount     uint32
		globalSec       = -1
		exportSec       = -1
		codeSec         = -1
		startSec        = -1
		startFunc       uint32
		hasMemory       bool
	)
	r := &reader{b: bin, off: 8}
	for s, ok := r.next(); ok; s, ok = r.next() {
		id := s.id
		c := &reader{b: bin[s.body:s.end]}
		switch id {
		case 2, 5: // import, memory: counted by the preflight reader
			if err := c.section(id); err != nil {
				return nil, fmt.Errorf("%s section: %w", sectionName(id), err)
			}
			importedGlobals += uint32(c.globalImports)
			hasMemory = hasMemory || c.memories > 0
		case 6:
			definedGlobals = c.u32()
			globalSec = len(secs)
		case 7:
			exportCount = c.u32()
			for i := exportCount; i > 0 && c.err == nil; i-- {
				n := c.u32()
				if c.err == nil && uint64(n) <= uint64(len(c.b)-c.off) {
					if name := string(c.b[c.off : c.off+int(n)]); name == InterruptExport || name == StartExport {
						return nil, fmt.Errorf("the module exports %q, a name the host reserves", name)
					}
				}
				c.skip(uint64(n))
				c.byte()
				c.u32()
			}
			exportSec = len(secs)
		case 8:
			startFunc = c.u32()
			startSec = len(secs)
		case 10:
			codeSec = len(secs)
		}
		if c.err != nil {
			return nil, fmt.Errorf("%s section: %w", sectionName(id), c.err)
		}
		secs = append(secs, s)
	}
	if r.err != nil {
		return nil, errors.New("malformed section header")
	}
	if !hasMemory {
		// The checks need a memory (memory.grow); a module without one is
		// refused by validation anyway, with the export it lacks named.
		return bin, nil
	}
	flag := importedGlobals + definedGlobals
	budget := flag + 1
	check := loopCheck(flag, budget)

	// The new globals, both (mut i32): the flag, initialised with 0, and
	// the budget, with checkEvery.
	newGlobal := []byte{0x7f, 0x01, 0x41, 0x00, 0x0b, 0x7f, 0x01}
	newGlobal = append(leb128.AppendInt(append(newGlobal, 0x41), checkEvery), 0x0b)
	var newExport []byte
	newExport = leb128.AppendUint(newExport, uint64(len(InterruptExport)))
	newExport = append(newExport, InterruptExport...)
	newExport = append(newExport, 0x03)
	newExport = leb128.AppendUint(newExport, uint64(flag))
	newExports := uint32(1)
	if startSec >= 0 {
		newExport = leb128.AppendUint(newExport, uint64(len(StartExport)))
		newExport = append(newExport, StartExport...)
		newExport = append(newExport, 0x00)
		newExport = leb128.AppendUint(newExport, uint64(startFunc))
		newExports++
	}

	out := make([]byte, 0, len(bin)+len(bin)/16+64)
	out = append(out, bin[:8]...)
	// vecSection writes a section whose contents are a vector of count
	// entries: old holds the entries (after the old count), extra the
	// added ones.
	vecSection := func(id byte, count, added uint32, old, extra []byte) {
		var hdr []byte
		hdr = leb128.AppendUint(hdr, uint64(count)+uint64(added))
		out = append(out, id)
		out = leb128.AppendUint(out, uint64(len(hdr)+len(old)+len(extra)))
		out = append(out, hdr...)
		out = append(out, old...)
		out = append(out, extra...)
	}
	entries := func(s span) []byte {
		c := &reader{b: bin[s.body:s.end]}
		c.u32()
		return c.b[c.off:]
	}
	// Where a missing global or export section goes: before the first
	// section that follows it in the binary's order.
	rank := func(id byte) int {
		switch id {
		case 13: // tag
			return 55
		case 12: // data count
			return 95
		case 0:
			return -1
		}
		return int(id) * 10
	}
	wroteGlobal, wroteExport := globalSec >= 0, exportSec >= 0
	for i, s := range secs {
		if !wroteGlobal && rank(s.id) > rank(6) {
			vecSection(6, 0, 2, nil, newGlobal)
			wroteGlobal = true
		}
		if !wroteExport && rank(s.id) > rank(7) {
			vecSection(7, 0, newExports, nil, newExport)
			wroteExport = true
		}
		switch i {
		case globalSec:
			vecSection(6, definedGlobals, 2, entries(s), newGlobal)
		case exportSec:
			vecSection(7, exportCount, newExports, entries(s), newExport)
		case startSec: // dropped: the host calls StartExport
		case codeSec:
			code, err := instrumentCode(bin[s.body:s.end], flag, check)
			if err != nil {
				return nil, err
			}
			out = append(out, 10)
			out = leb128.AppendUint(out, uint64(len(code)))
			out = append(out, code...)
		default:
			out = append(out, bin[s.start:s.end]...)
		}
	}
	if !wroteGlobal {
		vecSection(6, 0, 2, nil, newGlobal)
	}
	if !wroteExport {
		vecSection(7, 0, newExports, nil, newExport)
	}
	return out, nil
}

// checkEvery is how many loop iterations pass between two looks at the
// interrupt flag, ~0.1–0.3 ms of a Go guest's code: the longest a garbage
// collection waits for the goroutine running a guest, and how late past
// its deadline a runaway guest stops. Each look costs one exit to Go
// (~0.3 µs), ~1% of the time of the tightest loop.
const checkEvery = 1 << 14

// loopCheck returns the code inserted at the top of every loop:
//
//	global.get $budget
//	i32.eqz
//	if                      ;; every checkEvery iterations:
//	  i32.const 0
//	  memory.grow 0         ;;   leave machine code for the Go runtime
//	  drop
//	  global.get $interrupt
//	  if unreachable end    ;;   trap if the host raised the flag
//	  i32.const checkEvery
//	  global.set $budget
//	end
//	global.get $budget
//	i32.const 1
//	i32.sub
//	global.set $budget
//
// The memory.grow of 0 pages changes nothing, but wazero runs it in Go:
// it is where the goroutine running the guest can be preempted. Without
// it a guest looping in machine code never reaches a Go safe point, and
// a garbage collection (which needs every goroutine to reach one) would
// wait for it with both cores held — the timer that raises the flag could
// then never run.
func loopCheck(flag, budget uint32) []byte {
	b := leb128.AppendUint([]byte{0x23}, uint64(budget))
	b = append(b, 0x45, 0x04, 0x40, 0x41, 0x00, 0x40, 0x00, 0x1a, 0x23)
	b = leb128.AppendUint(b, uint64(flag))
	b = append(b, 0x04, 0x40, 0x00, 0x0b, 0x41)
	b = leb128.AppendInt(b, checkEvery)
	b = leb128.AppendUint(append(b, 0x24), uint64(budget))
	b = append(b, 0x0b, 0x23)
	b = leb128.AppendUint(b, uint64(budget))
	b = append(b, 0x41, 0x01, 0x6b, 0x24)
	return leb128.AppendUint(b, uint64(budget))
}

// instrumentCode rewrites the contents of a code section.
func instrumentCode(sec []byte, globals uint32, check []byte) ([]byte, error) {
	r := &reader{b: sec}
	n := r.count(1)
	out := make([]byte, 0, len(sec)+len(sec)/8)
	out = leb128.AppendUint(out, uint64(n))
	var body []byte
	for i := uint32(0); i < n && r.err == nil; i++ {
		size := r.u32()
		if r.err != nil || uint64(size) > uint64(len(r.b)-r.off) {
			return nil, fmt.Errorf("code section: function body %d is truncated", i)
		}
		var err error
		body, err = instrumentBody(body[:0], r.b[r.off:r.off+int(size)], globals, check)
		if err != nil {
			return nil, fmt.Errorf("code section: function body %d: %w", i, err)
		}
		out = leb128.AppendUint(out, uint64(len(body)))
		out = append(out, body...)
		r.off += int(size)
	}
	if r.err != nil {
		return nil, fmt.Errorf("code section: %w", r.err)
	}
	return out, nil
}

// instrumentBody appends the rewritten function body to out: the locals
// unchanged, and the check after the block type of every loop.
func instrumentBody(out, b []byte, globals uint32, check []byte) ([]byte, error) {
	r := &reader{b: b}
	for j := r.count(2); j > 0 && r.err == nil; j-- {
		r.u32()
		r.valtype()
	}
	from := 0 // bytes before this offset are copied to out
	for r.off < len(r.b) && r.err == nil {
		at := r.off
		op := r.byte()
		switch {
		case op == 0x03: // loop bt
			r.leb(5)
			out = append(out, b[from:r.off]...)
			out = append(out, check...)
			from = r.off
		case op == 0x02 || op == 0x04: // block bt, if bt
			r.leb(5)
		case op <= 0x01, op == 0x05, op == 0x0b, op == 0x0f, op == 0x1a, op == 0x1b, op == 0xd1:
		case op == 0x0c || op == 0x0d || op == 0x10 || op == 0x12 || op == 0xd2: // br, br_if, call, return_call, ref.func
			r.u32()
		case op == 0x0e: // br_table
			for k := r.count(1); k > 0 && r.err == nil; k-- {
				r.u32()
			}
			r.u32()
		case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
			r.u32()
			r.u32()
		case op == 0x1c: // select t*
			for k := r.count(1); k > 0 && r.err == nil; k-- {
				r.valtype()
			}
		case op >= 0x20 && op <= 0x22: // local.get/set/tee
			r.u32()
		case op == 0x23 || op == 0x24: // global.get/set
			if g := r.u32(); r.err == nil && g >= globals {
				return nil, fmt.Errorf("offset %d: global %d does not exist (the module has %d)", at, g, globals)
			}
		case op == 0x25 || op == 0x26: // table.get/set
			r.u32()
		case op >= 0x28 && op <= 0x3e: // loads and stores
			r.memarg()
		case op == 0x3f || op == 0x40: // memory.size, memory.grow
			r.u32()
		case op == 0x41:
			r.leb(5)
		case op == 0x42:
			r.leb(10)
		case op == 0x43:
			r.skip(4)
		case op == 0x44:
			r.skip(8)
		case op >= 0x45 && op <= 0xc4: // numeric
		case op == 0xd0: // ref.null
			r.leb(5)
		case op == 0xfc:
			r.prefixedFC()
		case op == 0xfd:
			r.prefixedSIMD()
		case op == 0xfe:
			r.prefixedAtomic()
		default:
			return nil, fmt.Errorf("offset %d: unsupported opcode 0x%02x", at, op)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return append(out, b[from:]...), nil
}

// memarg skips a memory argument (align, with bit 6 announcing a memory
// index, then offset).
func (r *reader) memarg() {
	if align := r.u32(); align&0x40 != 0 {
		r.u32()
	}
	r.leb(10)
}

func (r *reader) prefixedFC() {
	switch sub := r.u32(); {
	case sub <= 7: // saturating truncations
	case sub == 8: // memory.init data mem
		r.u32()
		r.u32()
	case sub == 9 || sub == 11 || sub == 13 || (sub >= 15 && sub <= 17): // data.drop, memory.fill, elem.drop, table.grow/size/fill
		r.u32()
	case sub == 10 || sub == 12 || sub == 14: // memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	default:
		r.fail(fmt.Errorf("unsupported instruction 0xfc %d", sub))
	}
}

func (r *reader) prefixedSIMD() {
	switch sub := r.u32(); {
	case sub <= 11 || sub == 92 || sub == 93: // loads and stores
		r.memarg()
	case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
		r.skip(16)
	case sub >= 21 && sub <= 34: // extract/replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load/store lane
		r.memarg()
		r.byte()
	case sub <= 0x113: // the rest (relaxed SIMD included) take no immediate
	default:
		r.fail(fmt.Errorf("unsupported instruction 0xfd %d", sub))
	}
}

func (r *reader) prefixedAtomic() {
	switch sub := r.u32(); {
	case sub == 3: // atomic.fence
		r.byte()
	case sub <= 2 || (sub >= 0x10 && sub <= 0x4e):
		r.memarg()
	default:
		r.fail(fmt.Errorf("unsupported instruction 0xfe %d", sub))
	}
}
