// Package wasmbin reads and rewrites WebAssembly binaries before wazero
// compiles them, apart from the runtime (package wasm) as wazero's
// internal/wasm/binary is apart from its engine:
//
//   - Preflight checks the sizes and counts a module's sections claim (and
//     caps its tables) so that decoding it cannot exhaust the host;
//   - Instrument adds the interrupt flag and a loop budget checked at the
//     top of every loop, by which the host stops a guest at its deadline;
//   - MergeData joins a Go guest's tens of thousands of data segments into
//     a few, which halves the cost of each instantiation.
//
// They walk the binary with one reader (this file).
package wasmbin

import (
	"errors"
	"fmt"
)

var errShort = errors.New("unexpected end")

var sectionNames = []string{"custom", "type", "import", "function", "table", "memory", "global", "export", "start", "element", "code", "data", "data count", "tag"}

func sectionName(id byte) string {
	if int(id) < len(sectionNames) {
		return sectionNames[id]
	}
	return fmt.Sprintf("unknown (%d)", id)
}

// span is one section of a module, or one subsection of its name section:
// its id and the offsets of its id byte, its contents and its end.
type span struct {
	id               byte
	start, body, end int
}

// claimError is a section header whose size claims more bytes than remain.
type claimError struct {
	id     byte
	size   uint32
	remain int
}

func (e *claimError) Error() string {
	return fmt.Sprintf("claims %d bytes, %d remain", e.size, e.remain)
}

// next reads the section header at r.off (an id byte, then a u32 size)
// and moves past the section. ok is false at the end of r.b and for a
// malformed header, which r.err then describes (a *claimError for a size
// past the end).
func (r *reader) next() (s span, ok bool) {
	if r.off >= len(r.b) || r.err != nil {
		return s, false
	}
	s.start = r.off
	s.id = r.byte()
	size := r.u32()
	if r.err != nil {
		return s, false
	}
	if uint64(size) > uint64(len(r.b)-r.off) {
		r.fail(&claimError{id: s.id, size: size, remain: len(r.b) - r.off})
		return s, false
	}
	s.body, s.end = r.off, r.off+int(size)
	r.off = s.end
	return s, true
}

// reader is a cursor over wasm binary bytes; after the first error every
// read returns zero.
type reader struct {
	b      []byte
	off    int
	err    error
	tables []table // filled by the table section
	// Counted by the import and memory sections (for Instrument).
	globalImports, memories int
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.off = len(r.b)
}

func (r *reader) byte() byte {
	if r.err != nil || r.off >= len(r.b) {
		r.fail(errShort)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

// leb reads an LEB128 number of at most maxBytes bytes (signedness does
// not matter to a reader that only skips or bounds it).
func (r *reader) leb(maxBytes int) uint64 {
	var v uint64
	for i := 0; i < maxBytes; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if i < 10 {
			v |= uint64(c&0x7f) << (7 * i)
		}
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail(errors.New("LEB128 number too long"))
	return 0
}

func (r *reader) u32() uint32 { return uint32(r.leb(5)) }

func (r *reader) skip(n uint64) {
	if r.err != nil {
		return
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail(fmt.Errorf("%d bytes claimed, %d remain", n, len(r.b)-r.off))
		return
	}
	r.off += int(n)
}

// count reads a vector length and checks the remaining bytes could hold
// that many elements of at least minSize bytes.
func (r *reader) count(minSize int) uint32 {
	n := r.u32()
	if r.err == nil && uint64(n)*uint64(minSize) > uint64(len(r.b)-r.off) {
		r.fail(fmt.Errorf("%d elements claimed in %d bytes", n, len(r.b)-r.off))
		return 0
	}
	return n
}

func (r *reader) name() { r.skip(uint64(r.u32())) }

func (r *reader) valtype() {
	switch c := r.byte(); c {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f, 0x69:
	case 0x63, 0x64: // (ref null ht), (ref ht)
		r.leb(5)
	default:
		r.fail(fmt.Errorf("unknown value type 0x%x", c))
	}
}

func (r *reader) limits() (min, max uint32, hasMax bool) {
	flags := r.byte()
	if flags&^0x03 != 0 {
		r.fail(fmt.Errorf("unsupported limits flags 0x%x", flags))
		return
	}
	min = r.u32()
	if flags&1 != 0 {
		max, hasMax = r.u32(), true
	}
	return
}

// constExpr skips a constant expression through its end opcode.
func (r *reader) constExpr() {
	for r.err == nil {
		switch op := r.byte(); op {
		case 0x0b:
			return
		case 0x41, 0x23, 0xd2: // i32.const, global.get, ref.func
			r.leb(5)
		case 0x42: // i64.const
			r.leb(10)
		case 0x43:
			r.skip(4)
		case 0x44:
			r.skip(8)
		case 0xd0: // ref.null heaptype
			r.leb(5)
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended constant arithmetic
		case 0xfd: // v128.const
			if r.u32() != 12 {
				r.fail(errors.New("unsupported SIMD instruction in a constant expression"))
				return
			}
			r.skip(16)
		default:
			r.fail(fmt.Errorf("unsupported opcode 0x%x in a constant expression", op))
		}
	}
}

// section checks one section's contents.
func (r *reader) section(id byte) error {
	switch id {
	case 0: // custom
		n := uint64(r.u32())
		if r.err == nil && n <= uint64(len(r.b)-r.off) && string(r.b[r.off:r.off+int(n)]) == "name" {
			r.off += int(n)
			r.nameSection()
		} else {
			r.skip(n)
		}
	case 1: // type
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			if form := r.byte(); form != 0x60 {
				r.fail(fmt.Errorf("unsupported type form 0x%x", form))
			}
			for j := r.count(1); j > 0 && r.err == nil; j-- {
				r.valtype()
			}
			for j := r.count(1); j > 0 && r.err == nil; j-- {
				r.valtype()
			}
		}
	case 2: // import
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			r.name()
			r.name()
			switch kind := r.byte(); kind {
			case 0: // func
				r.u32()
			case 1: // table
				r.valtype()
				r.limits()
			case 2: // memory
				r.limits()
				r.memories++
			case 3: // global
				r.valtype()
				r.byte()
				r.globalImports++
			case 4: // tag
				r.byte()
				r.u32()
			default:
				r.fail(fmt.Errorf("unknown import kind %d", kind))
			}
		}
	case 3, 12: // function, data count
		if id == 12 {
			r.u32()
			break
		}
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			r.u32()
		}
	case 4: // table
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			from := r.off
			r.valtype()
			t := table{reftype: r.b[from:r.off]}
			t.min, t.max, t.hasMax = r.limits()
			if r.err == nil && t.min > MaxTableElems {
				r.fail(fmt.Errorf("table of %d entries exceeds the limit of %d", t.min, MaxTableElems))
			}
			r.tables = append(r.tables, t)
		}
	case 5: // memory
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			r.limits()
			r.memories++
		}
	case 6: // global
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			r.valtype()
			r.byte()
			r.constExpr()
		}
	case 7: // export
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			r.name()
			r.byte()
			r.u32()
		}
	case 8: // start
		r.u32()
	case 9: // element
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			r.element()
		}
	case 10: // code
		n := r.count(1)
		for i := uint32(0); i < n && r.err == nil; i++ {
			size := r.u32()
			if r.err != nil {
				break
			}
			if uint64(size) > uint64(len(r.b)-r.off) {
				r.fail(fmt.Errorf("function body of %d bytes, %d remain", size, len(r.b)-r.off))
				break
			}
			body := &reader{b: r.b[r.off : r.off+int(size)]}
			var sum uint64
			for j := body.count(2); j > 0 && body.err == nil; j-- {
				sum += uint64(body.u32())
				body.valtype()
			}
			if body.err == nil && sum > maxLocals {
				body.fail(fmt.Errorf("function %d declares %d locals, at most %d allowed", i, sum, maxLocals))
			}
			if body.err != nil {
				r.fail(fmt.Errorf("code: %w", body.err))
			}
			r.off += int(size)
		}
	case 11: // data
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			switch flags := r.u32(); flags {
			case 0:
				r.constExpr()
			case 1:
			case 2:
				r.u32()
				r.constExpr()
			default:
				r.fail(fmt.Errorf("unknown data segment flags %d", flags))
			}
			r.name() // the bytes: a length-prefixed run like a name
		}
	case 13: // tag
		for i := r.count(1); i > 0 && r.err == nil; i-- {
			r.byte()
			r.u32()
		}
	default:
		r.skip(uint64(len(r.b) - r.off)) // unknown: wazero refuses it
	}
	if r.err == nil && r.off != len(r.b) && id != 0 {
		r.fail(fmt.Errorf("%d bytes left over", len(r.b)-r.off))
	}
	return r.err
}

func (r *reader) element() {
	flags := r.u32()
	if flags > 7 {
		r.fail(fmt.Errorf("unknown element segment flags %d", flags))
		return
	}
	if flags&2 != 0 && flags&1 == 0 { // 2, 6: explicit table index
		r.u32()
	}
	if flags&1 == 0 { // 0, 2, 4, 6: active, with an offset
		r.constExpr()
	}
	if flags&3 != 0 { // 1, 2, 3, 5, 6, 7: an element kind or reference type
		if flags&4 != 0 {
			r.valtype()
		} else {
			r.byte()
		}
	}
	for n := r.count(1); n > 0 && r.err == nil; n-- {
		if flags&4 != 0 {
			r.constExpr()
		} else {
			r.u32()
		}
	}
}

// nameSection checks the subsections of the "name" custom section that
// wazero decodes into count-sized maps.
func (r *reader) nameSection() {
	for {
		sub, ok := r.next()
		if !ok {
			var ce *claimError
			if errors.As(r.err, &ce) {
				r.err = fmt.Errorf("name subsection %d %w", ce.id, ce)
			}
			return
		}
		s := &reader{b: r.b[sub.body:sub.end]}
		switch sub.id {
		case 1: // function names
			for i := s.count(2); i > 0 && s.err == nil; i-- {
				s.u32()
				s.name()
			}
		case 2: // local names
			for i := s.count(2); i > 0 && s.err == nil; i-- {
				s.u32()
				for j := s.count(2); j > 0 && s.err == nil; j-- {
					s.u32()
					s.name()
				}
			}
		}
		if s.err != nil {
			r.fail(fmt.Errorf("name subsection %d: %w", sub.id, s.err))
			return
		}
	}
}
