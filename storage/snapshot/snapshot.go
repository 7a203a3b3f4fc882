// Package snapshot is the stream format of edgeshard's shard snapshots:
// the whole state of one shard (a move, an export) or of many (a backup),
// as one versioned, sectioned, checksummed stream. It knows nothing of
// storage: package storage writes and reads its sections (storage/snapshot.go).
//
// Every frame carries a CRC-32C of itself, so a corrupt frame is refused
// before anything uses its contents; the last frame carries the SHA-256 of
// every byte before it, so a truncated stream, or one with frames dropped
// or reordered, is refused at its end. Both fail with ErrCorrupt.
//
// Layout, version 1 (integers are unsigned varints unless noted):
//
//	stream  = "EDGESNAP" version(1 byte) header shard* end
//	frame   = kind(1 byte) len payload[len] crc32c(kind len payload; 4 bytes, big endian)
//	header  = frame 'H': taken_at(unix ms) str(note)
//	shard   = frame 'S': str(namespace) str(name) ; section* ; frame 'F': sections
//	section = frame 'B': str(name) ; frame 'C'* (its bytes, in chunks) ; frame 'E': chunks bytes
//	end     = frame 'Z': shards sha256(every byte of the stream before this frame; 32 bytes)
//	str     = len bytes[len]
//
// A section is named so that a reader can tell what it does not know
// (ErrUnknownSection) and a new kind of state (a per-shard database) can
// be added as a new section without changing the version: old snapshots
// lack it and stay readable. The version changes only when a reader of
// the old one would misread the new stream.
package snapshot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// Version is the format version this package writes and the newest it reads.
const Version = 1

// Magic starts every stream.
const Magic = "EDGESNAP"

// MaxFrame bounds a frame's payload: a reader refuses a longer one before
// allocating it. A chunk of a section is at most this long.
const MaxFrame = 4 << 20

// ChunkSize is the size at which a section written through Write is cut
// into chunks.
const ChunkSize = 256 << 10

// Frame kinds.
const (
	kindHeader    = 'H'
	kindShard     = 'S'
	kindBegin     = 'B'
	kindChunk     = 'C'
	kindEnd       = 'E'
	kindShardEnd  = 'F'
	kindStreamEnd = 'Z'
)

var (
	// ErrCorrupt reports a stream that is not a complete, intact snapshot:
	// a checksum mismatch, a truncation, a malformed or misplaced frame.
	ErrCorrupt = errors.New("snapshot: corrupt or truncated stream")
	// ErrVersion reports a stream of a newer format version than this
	// program reads.
	ErrVersion = errors.New("snapshot: unsupported format version")
	// ErrUnknownSection reports a section its reader has no use for (a
	// snapshot from a newer edgeshard, or with state this host lacks).
	ErrUnknownSection = errors.New("snapshot: unknown section")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header describes a stream.
type Header struct {
	// TakenAt is when the snapshot was taken, unix milliseconds.
	TakenAt int64
	// Note is free text for operators (what, which node).
	Note string
}

// ShardRef names a shard in a stream.
type ShardRef struct{ Namespace, Name string }

// Writer writes one stream. Its methods must be called in the order of
// the layout: BeginShard, then for each section BeginSection, Write or
// Chunk, EndSection; then EndShard; finally Close. The first error is
// sticky.
type Writer struct {
	w      io.Writer
	sum    hash.Hash
	err    error
	frame  []byte
	buf    []byte // section bytes not yet in a chunk
	shards uint64
	// Per shard and section.
	inShard, inSection bool
	sections           uint64
	chunks, bytes      uint64
}

// NewWriter writes the stream's start (magic, version, header) to w.
func NewWriter(w io.Writer, h Header) *Writer {
	sw := &Writer{w: w, sum: sha256.New()}
	sw.write(append([]byte(Magic), Version))
	p := binary.AppendUvarint(nil, uint64(h.TakenAt))
	sw.put(kindHeader, appendStr(p, h.Note))
	return sw
}

// BeginShard starts a shard.
func (w *Writer) BeginShard(s ShardRef) error {
	if w.err == nil && (w.inShard || w.inSection) {
		w.err = errors.New("snapshot: BeginShard inside a shard")
	}
	w.inShard, w.sections = true, 0
	w.put(kindShard, appendStr(appendStr(nil, s.Namespace), s.Name))
	return w.err
}

// BeginSection starts a named section of the current shard.
func (w *Writer) BeginSection(name string) error {
	if w.err == nil && (!w.inShard || w.inSection) {
		w.err = errors.New("snapshot: BeginSection outside a shard or inside a section")
	}
	w.inSection, w.chunks, w.bytes = true, 0, 0
	w.sections++
	w.put(kindBegin, appendStr(nil, name))
	return w.err
}

// Write appends p to the current section, cut into chunks of ChunkSize.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err == nil && !w.inSection {
		w.err = errors.New("snapshot: Write outside a section")
	}
	if w.err != nil {
		return 0, w.err
	}
	w.buf = append(w.buf, p...)
	for len(w.buf) >= ChunkSize && w.err == nil {
		w.chunk(w.buf[:ChunkSize])
		w.buf = append(w.buf[:0], w.buf[ChunkSize:]...)
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// Chunk writes p as one chunk of the current section (after what Write
// buffered): a reader's Chunk returns it whole. len(p) ≤ MaxFrame.
func (w *Writer) Chunk(p []byte) error {
	if w.err == nil && !w.inSection {
		w.err = errors.New("snapshot: Chunk outside a section")
	}
	if w.err == nil && len(p) > MaxFrame {
		w.err = fmt.Errorf("snapshot: chunk of %d bytes exceeds %d", len(p), MaxFrame)
	}
	w.flushBuf()
	w.chunk(p)
	return w.err
}

func (w *Writer) flushBuf() {
	if len(w.buf) > 0 {
		w.chunk(w.buf)
		w.buf = w.buf[:0]
	}
}

func (w *Writer) chunk(p []byte) {
	if len(p) == 0 {
		return
	}
	w.chunks++
	w.bytes += uint64(len(p))
	w.put(kindChunk, p)
}

// EndSection ends the current section.
func (w *Writer) EndSection() error {
	if w.err == nil && !w.inSection {
		w.err = errors.New("snapshot: EndSection outside a section")
	}
	w.flushBuf()
	w.inSection = false
	w.put(kindEnd, binary.AppendUvarint(binary.AppendUvarint(nil, w.chunks), w.bytes))
	return w.err
}

// EndShard ends the current shard.
func (w *Writer) EndShard() error {
	if w.err == nil && (!w.inShard || w.inSection) {
		w.err = errors.New("snapshot: EndShard outside a shard or inside a section")
	}
	w.inShard = false
	w.shards++
	w.put(kindShardEnd, binary.AppendUvarint(nil, w.sections))
	return w.err
}

// Close writes the stream's end frame. It does not close the underlying
// writer.
func (w *Writer) Close() error {
	if w.err == nil && (w.inShard || w.inSection) {
		w.err = errors.New("snapshot: Close inside a shard")
	}
	if w.err != nil {
		return w.err
	}
	p := binary.AppendUvarint(nil, w.shards)
	w.put(kindStreamEnd, w.sum.Sum(p))
	return w.err
}

// Shards returns how many shards were ended so far.
func (w *Writer) Shards() int { return int(w.shards) }

func (w *Writer) put(kind byte, payload []byte) {
	if w.err != nil {
		return
	}
	f := append(w.frame[:0], kind)
	f = binary.AppendUvarint(f, uint64(len(payload)))
	crc := crc32.Update(crc32.Checksum(f, castagnoli), castagnoli, payload)
	var tail [4]byte
	binary.BigEndian.PutUint32(tail[:], crc)
	w.frame = f
	w.write(f)
	w.write(payload)
	w.write(tail[:])
}

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	w.sum.Write(p)
	if _, err := w.w.Write(p); err != nil {
		w.err = fmt.Errorf("snapshot: write: %w", err)
	}
}

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// Reader reads one stream, checking every frame as it goes. Its methods
// follow the layout: NextShard, then NextSection and Chunk (or Read) until
// they return io.EOF, then NextShard again, until it returns io.EOF once
// the end frame has been verified. Any other error wraps ErrCorrupt (or
// ErrVersion, or the underlying reader's error) and is sticky.
type Reader struct {
	r      *bufio.Reader
	sum    hash.Hash
	off    int64 // bytes consumed
	err    error
	header Header
	buf    []byte

	// Where the reader is.
	inShard, inSection, done bool
	shards, sections         uint64
	chunks, bytes            uint64
	chunk                    []byte // unread part of the current chunk (Read)
}

// NewReader reads the stream's start; a stream that is not a snapshot, or
// of a newer version, fails here.
func NewReader(r io.Reader) (*Reader, error) {
	sr := &Reader{r: bufio.NewReaderSize(r, 64<<10), sum: sha256.New()}
	var start [len(Magic) + 1]byte
	if err := sr.full(start[:]); err != nil {
		return nil, sr.fail(fmt.Errorf("%w: no snapshot start (%w)", ErrCorrupt, err))
	}
	if string(start[:len(Magic)]) != Magic {
		return nil, sr.fail(fmt.Errorf("%w: not an edgeshard snapshot (starts %q, want %q)", ErrCorrupt, start[:len(Magic)], Magic))
	}
	if v := start[len(Magic)]; v == 0 || v > Version {
		return nil, sr.fail(fmt.Errorf("%w: version %d (this edgeshard reads 1 to %d)", ErrVersion, v, Version))
	}
	kind, p, err := sr.frame()
	if err != nil {
		return nil, err
	}
	if kind != kindHeader {
		return nil, sr.fail(sr.corrupt("want the header frame, got %q", kind))
	}
	at, p, ok := uvarint(p)
	note, p, ok2 := str(p)
	if !ok || !ok2 || len(p) != 0 {
		return nil, sr.fail(sr.corrupt("malformed header frame"))
	}
	sr.header = Header{TakenAt: int64(at), Note: note}
	return sr, nil
}

// Header returns the stream's header.
func (r *Reader) Header() Header { return r.header }

// NextShard moves to the next shard. It returns io.EOF after the last,
// once the end frame has verified the whole stream.
func (r *Reader) NextShard() (ShardRef, error) {
	if r.err != nil {
		return ShardRef{}, r.err
	}
	for r.inShard {
		if _, err := r.NextSection(); err != nil && err != io.EOF {
			return ShardRef{}, err
		}
	}
	if r.done {
		return ShardRef{}, io.EOF
	}
	before := r.sum.Sum(nil)
	kind, p, err := r.frame()
	if err != nil {
		return ShardRef{}, err
	}
	switch kind {
	case kindShard:
		ns, rest, ok := str(p)
		name, rest, ok2 := str(rest)
		if !ok || !ok2 || len(rest) != 0 {
			return ShardRef{}, r.fail(r.corrupt("malformed shard frame"))
		}
		r.inShard, r.sections = true, 0
		return ShardRef{Namespace: ns, Name: name}, nil
	case kindStreamEnd:
		n, rest, ok := uvarint(p)
		if !ok || len(rest) != sha256.Size {
			return ShardRef{}, r.fail(r.corrupt("malformed end frame"))
		}
		if n != r.shards {
			return ShardRef{}, r.fail(r.corrupt("the end frame counts %d shards, the stream holds %d", n, r.shards))
		}
		if !bytes.Equal(rest, before) {
			return ShardRef{}, r.fail(r.corrupt("stream checksum mismatch"))
		}
		if _, err := r.r.ReadByte(); err != io.EOF {
			return ShardRef{}, r.fail(r.corrupt("data after the end frame"))
		}
		r.done = true
		return ShardRef{}, io.EOF
	}
	return ShardRef{}, r.fail(r.corrupt("want a shard or the end, got frame %q", kind))
}

// NextSection moves to the current shard's next section, skipping what is
// left of the current one, and returns its name; io.EOF at the shard's end.
func (r *Reader) NextSection() (string, error) {
	if r.err != nil {
		return "", r.err
	}
	if !r.inShard {
		return "", io.EOF
	}
	for r.inSection {
		if _, err := r.Chunk(); err != nil && err != io.EOF {
			return "", err
		}
	}
	kind, p, err := r.frame()
	if err != nil {
		return "", err
	}
	switch kind {
	case kindBegin:
		name, rest, ok := str(p)
		if !ok || len(rest) != 0 {
			return "", r.fail(r.corrupt("malformed section frame"))
		}
		r.inSection, r.chunks, r.bytes, r.chunk = true, 0, 0, nil
		r.sections++
		return name, nil
	case kindShardEnd:
		n, rest, ok := uvarint(p)
		if !ok || len(rest) != 0 || n != r.sections {
			return "", r.fail(r.corrupt("shard end frame does not match its %d sections", r.sections))
		}
		r.inShard = false
		r.shards++
		return "", io.EOF
	}
	return "", r.fail(r.corrupt("want a section or the shard's end, got frame %q", kind))
}

// Chunk returns the current section's next chunk, valid until the next
// call; io.EOF at the section's end, once its end frame matched.
func (r *Reader) Chunk() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	if !r.inSection {
		return nil, io.EOF
	}
	r.chunk = nil
	kind, p, err := r.frame()
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindChunk:
		r.chunks++
		r.bytes += uint64(len(p))
		return p, nil
	case kindEnd:
		c, rest, ok := uvarint(p)
		b, rest, ok2 := uvarint(rest)
		if !ok || !ok2 || len(rest) != 0 || c != r.chunks || b != r.bytes {
			return nil, r.fail(r.corrupt("section end frame does not match its %d chunks of %d bytes", r.chunks, r.bytes))
		}
		r.inSection = false
		return nil, io.EOF
	}
	return nil, r.fail(r.corrupt("want a chunk or the section's end, got frame %q", kind))
}

// Read reads the current section's bytes; io.EOF at its end.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.chunk) == 0 {
		c, err := r.Chunk()
		if err != nil {
			return 0, err
		}
		r.chunk = c
	}
	n := copy(p, r.chunk)
	r.chunk = r.chunk[n:]
	return n, nil
}

// Offset returns how many bytes of the stream have been read.
func (r *Reader) Offset() int64 { return r.off }

// frame reads and checks one frame; its payload is valid until the next.
func (r *Reader) frame() (byte, []byte, error) {
	at := r.off
	var hdr [1 + binary.MaxVarintLen64]byte
	kind, err := r.r.ReadByte()
	if err != nil {
		return 0, nil, r.fail(r.truncated(at, err))
	}
	hdr[0] = kind
	n, err := binary.ReadUvarint(r.r)
	if err != nil {
		return 0, nil, r.fail(r.truncated(at, err))
	}
	if n > MaxFrame+binary.MaxVarintLen64*2 {
		return 0, nil, r.fail(r.corrupt("frame at byte %d claims %d bytes (max %d)", at, n, MaxFrame))
	}
	h := binary.AppendUvarint(hdr[:1], n)
	r.off += int64(len(h))
	r.sum.Write(h)
	if cap(r.buf) < int(n)+4 {
		r.buf = make([]byte, int(n)+4)
	}
	buf := r.buf[:int(n)+4]
	if err := r.full(buf); err != nil {
		return 0, nil, r.fail(r.truncated(at, err))
	}
	payload := buf[:n]
	crc := crc32.Update(crc32.Checksum(h, castagnoli), castagnoli, payload)
	if binary.BigEndian.Uint32(buf[n:]) != crc {
		return 0, nil, r.fail(r.corrupt("checksum mismatch in frame %q at byte %d", kind, at))
	}
	return kind, payload, nil
}

// full reads len(p) bytes, counting them into the offset and the checksum.
func (r *Reader) full(p []byte) error {
	n, err := io.ReadFull(r.r, p)
	r.off += int64(n)
	r.sum.Write(p[:n])
	return err
}

func (r *Reader) truncated(at int64, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return r.corrupt("truncated: the stream ends at byte %d, inside or before the frame at byte %d", r.off, at)
	}
	return fmt.Errorf("snapshot: read at byte %d: %w", r.off, err)
}

func (r *Reader) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

func (r *Reader) fail(err error) error {
	if r.err == nil {
		r.err = err
	}
	return r.err
}

func uvarint(p []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, p, false
	}
	return v, p[n:], true
}

func str(p []byte) (string, []byte, bool) {
	n, rest, ok := uvarint(p)
	if !ok || uint64(len(rest)) < n {
		return "", p, false
	}
	return string(rest[:n]), rest[n:], true
}
