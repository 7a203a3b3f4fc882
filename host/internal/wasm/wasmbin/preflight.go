package wasmbin

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/host/internal/wasm/leb128"
)

// Limits Preflight enforces before wazero sees a module.
const (
	// MaxTableElems caps the entries of one table: 8 bytes of host memory
	// each, outside the linear-memory cap. A Go plugin's one table holds a
	// few thousand. A table declaring more is refused; a table's maximum is
	// lowered to it (table.grow past it answers -1).
	MaxTableElems = 1 << 20
	// maxLocals caps the locals one function declares (V8's limit).
	maxLocals = 50000
)

// Preflight walks the binary's structure before wazero decodes it, for
// the numbers wazero 1.12 trusts:
//
//   - every vector count and byte length must fit in the bytes after it:
//     the decoder allocates count-sized slices before reading elements, so
//     a 15-byte module claiming 2^32-1 imports made it ask for ~480 GB,
//     a fatal out-of-memory that ends the whole host;
//   - a function declares at most maxLocals locals: one 6-byte declaration
//     of 2^32-1 locals made the decoder allocate and fill 4 GiB;
//   - a table holds at most MaxTableElems entries, and every table gets a
//     maximum (its minimum when it declares none): table.grow allocates
//     host memory outside the memory cap, so a plugin growing a table by
//     2^30 entries asked for 8 GiB at run time.
//
// It returns the binary to compile: bin, or a copy whose table section
// declares those maximums (the module keeps the sha256 of bin). Its error
// names the section and what is wrong. bin's 8-byte header (magic and
// version) is not checked: the caller checks the magic, wazero the version.
func Preflight(bin []byte) ([]byte, error) {
	r := &reader{b: bin, off: 8}
	var tables *tableSection
	for sec, ok := r.next(); ok; sec, ok = r.next() {
		s := &reader{b: r.b[sec.body:sec.end]}
		if err := s.section(sec.id); err != nil {
			return nil, fmt.Errorf("%s section: %w", sectionName(sec.id), err)
		}
		if sec.id == 4 {
			tables = &tableSection{start: sec.start, end: sec.end, tables: s.tables}
		}
	}
	var ce *claimError
	if errors.As(r.err, &ce) {
		return nil, fmt.Errorf("%s section %w", sectionName(ce.id), ce)
	}
	if r.err != nil {
		return nil, fmt.Errorf("section header: %w", r.err)
	}
	if tables == nil {
		return bin, nil
	}
	return tables.capped(bin)
}

// table is one table of the table section: its reference type's bytes
// and its limits.
type table struct {
	reftype  []byte
	min, max uint32
	hasMax   bool
}

// tableSection is where the table section lies in the binary.
type tableSection struct {
	start, end int // the whole section, id and size included
	tables     []table
}

// capped returns bin with every table's maximum set to its minimum when it
// declares none, and to MaxTableElems at most, or bin if nothing changes.
func (ts *tableSection) capped(bin []byte) ([]byte, error) {
	change := false
	for _, t := range ts.tables {
		if !t.hasMax || t.max > MaxTableElems {
			change = true
		}
	}
	if !change {
		return bin, nil
	}
	var content []byte
	content = leb128.AppendUint(content, uint64(len(ts.tables)))
	for _, t := range ts.tables {
		limit := t.min
		if t.hasMax {
			limit = min(max(t.max, t.min), MaxTableElems)
		}
		content = append(content, t.reftype...)
		content = append(content, 0x01)
		content = leb128.AppendUint(content, uint64(t.min))
		content = leb128.AppendUint(content, uint64(limit))
	}
	var out bytes.Buffer
	out.Grow(len(bin) + 16)
	out.Write(bin[:ts.start])
	out.WriteByte(4)
	out.Write(leb128.AppendUint(nil, uint64(len(content))))
	out.Write(content)
	out.Write(bin[ts.end:])
	return out.Bytes(), nil
}
