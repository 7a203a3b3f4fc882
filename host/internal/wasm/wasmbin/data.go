package wasmbin

import (
	"bytes"
	"sort"

	"github.com/edgeshard/edgeshard/host/internal/wasm/leb128"
)

// A Go guest's data section holds ~37,000 small active segments: the Go
// linker starts a new one wherever 8 or more zero bytes separate two runs
// of data. wazero 1.12 handles them one by one at every instantiation —
// it evaluates each offset expression (an allocation per segment) and
// keeps a slice header per segment in the instance (DataInstances, 24
// bytes each) for as long as the instance lives. For examples/counter
// that was half of the CPU time of an instantiation (~2.5 of ~5 ms) and
// ~870 KiB of Go heap per live instance.
//
// MergeData joins such segments into a few: neighbours separated by at
// most maxDataGap zero bytes become one segment with the zeros written
// out. Instantiating the result writes the same bytes to the same places.
// The gap is smaller than a page, so the merged segments touch no page
// the original ones left untouched: no more resident memory per
// instance; the binary (compiled once per version) grows by the zeros.

// maxDataGap is the largest run of zeros MergeData writes out to join two
// segments: under the smallest OS page size, so no page an instance never
// touched becomes resident.
const maxDataGap = 1024

type dataSegment struct {
	offset uint32 // where the segment is written in memory 0
	data   []byte
}

// MergeData returns bin with its data segments merged (see above), or bin
// itself when nothing can be merged or the data section is not of the
// simple form it rewrites: only active segments of memory 0 whose offset
// is an i32.const, no two of them overlapping, and no data count section
// (without one, code cannot use memory.init or data.drop, the only
// instructions that name a segment by its index). bin must have passed
// Preflight.
func MergeData(bin []byte) []byte {
	var data span
	r := &reader{b: bin, off: 8}
	for sec, ok := r.next(); ok; sec, ok = r.next() {
		switch sec.id {
		case 11:
			data = sec
		case 12:
			return bin // data count: segments may be named by index
		}
	}
	if r.err != nil || data.id == 0 {
		return bin
	}
	start, body, end := data.start, data.body, data.end
	segs, ok := readActiveSegments(bin[body:end])
	if !ok || len(segs) < 2 {
		return bin
	}
	merged, ok := mergeSegments(segs)
	if !ok || len(merged) == len(segs) {
		return bin
	}
	var content []byte
	content = leb128.AppendUint(content, uint64(len(merged)))
	for _, s := range merged {
		content = append(content, 0x00, 0x41)
		content = leb128.AppendInt(content, int64(int32(s.offset)))
		content = append(content, 0x0b)
		content = leb128.AppendUint(content, uint64(len(s.data)))
		content = append(content, s.data...)
	}
	var out bytes.Buffer
	out.Grow(start + len(content) + len(bin) - end + 8)
	out.Write(bin[:start])
	out.WriteByte(11)
	out.Write(leb128.AppendUint(nil, uint64(len(content))))
	out.Write(content)
	out.Write(bin[end:])
	return out.Bytes()
}

// readActiveSegments decodes a data section whose segments are all of the
// form (flags 0, i32.const offset, bytes); ok is false for any other.
func readActiveSegments(sec []byte) (segs []dataSegment, ok bool) {
	r := &reader{b: sec}
	n := r.count(4)
	segs = make([]dataSegment, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		if r.u32() != 0 || r.byte() != 0x41 {
			return nil, false
		}
		off := r.sleb32()
		if r.byte() != 0x0b {
			return nil, false
		}
		size := r.u32()
		if r.err != nil || uint64(size) > uint64(len(r.b)-r.off) {
			return nil, false
		}
		segs = append(segs, dataSegment{offset: uint32(off), data: r.b[r.off : r.off+int(size)]})
		r.off += int(size)
	}
	return segs, r.err == nil && r.off == len(r.b)
}

// mergeSegments joins each segment, in order, with the next one when that
// one starts at most maxDataGap bytes after it ends and no other segment
// lies between them. ok is false when two segments overlap: then the order
// in which they are written matters, and they are left as they are.
func mergeSegments(segs []dataSegment) (out []dataSegment, ok bool) {
	end := func(s dataSegment) uint64 { return uint64(s.offset) + uint64(len(s.data)) }
	order := make([]int, len(segs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return segs[order[a]].offset < segs[order[b]].offset })
	next := make([]int, len(segs)) // the segment after each one in memory, -1 for the last
	for k, i := range order {
		next[i] = -1
		if k+1 < len(order) {
			j := order[k+1]
			if uint64(segs[j].offset) < end(segs[i]) && len(segs[i].data) > 0 && len(segs[j].data) > 0 {
				return nil, false
			}
			next[i] = j
		}
	}
	last := 0 // index in segs of the last segment joined into the current one
	cur := dataSegment{offset: segs[0].offset, data: segs[0].data}
	owned := false // cur.data is a copy MergeData may append to
	for i := 1; i < len(segs); i++ {
		s := segs[i]
		if next[last] == i && uint64(s.offset) >= end(cur) && uint64(s.offset)-end(cur) <= maxDataGap {
			if !owned {
				cur.data = append([]byte(nil), cur.data...)
				owned = true
			}
			cur.data = append(cur.data, make([]byte, uint64(s.offset)-end(cur))...)
			cur.data = append(cur.data, s.data...)
			last = i
			continue
		}
		out = append(out, cur)
		cur, owned, last = dataSegment{offset: s.offset, data: s.data}, false, i
	}
	return append(out, cur), true
}

// sleb32 reads a signed LEB128 number of at most 5 bytes.
func (r *reader) sleb32() int32 {
	var v int64
	var shift uint
	for i := 0; i < 5; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return int32(v)
		}
	}
	r.fail(errShort)
	return 0
}
