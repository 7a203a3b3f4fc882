package abi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The wire format: every message is a flat byte string built from
//
//	u8, u32, u64  little-endian fixed width
//	bytes/string  u32 length, then the bytes
//
// Fixed widths cost one load each in the guest (no varint loops), and
// byte strings are copied with memmove. Decoders return sub-slices of their
// input for []byte fields; strings are copied. See ABI.md, "Encoding".

// ErrMalformed reports a message that does not decode.
var ErrMalformed = errors.New("abi: malformed message")

// Value type tags of SQL values.
const (
	TagNull  byte = 0
	TagInt   byte = 1
	TagFloat byte = 2
	TagText  byte = 3
	TagBlob  byte = 4
)

// List option flag bits.
const (
	listHasStart      = 1 << 0
	listHasStartAfter = 1 << 1
	listHasEnd        = 1 << 2
	listReverse       = 1 << 3
	listFlags         = listHasStart | listHasStartAfter | listHasEnd | listReverse
)

// Encoder appends wire values to a buffer.
type Encoder struct{ B []byte }

func (e *Encoder) U8(v byte) { e.B = append(e.B, v) }
func (e *Encoder) U32(v uint32) {
	e.B = binary.LittleEndian.AppendUint32(e.B, v)
}
func (e *Encoder) U64(v uint64) {
	e.B = binary.LittleEndian.AppendUint64(e.B, v)
}
func (e *Encoder) Bytes(b []byte) {
	e.U32(uint32(len(b)))
	e.B = append(e.B, b...)
}
func (e *Encoder) String(s string) {
	e.U32(uint32(len(s)))
	e.B = append(e.B, s...)
}

// Decoder reads wire values; after the first error every read returns zero
// values and Err reports ErrMalformed.
type Decoder struct {
	b   []byte
	off int
	err error
}

// NewDecoder returns a decoder over b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err returns ErrMalformed if any read ran past the input.
func (d *Decoder) Err() error { return d.err }

// Done reports an error unless all input was consumed without error.
func (d *Decoder) Done() error {
	if d.err == nil && d.off != len(d.b) {
		d.err = ErrMalformed
	}
	return d.err
}

func (d *Decoder) fail() { d.err = ErrMalformed; d.off = len(d.b) }

// take returns the next n bytes of the input (no copy, capacity capped),
// or nil after failing when fewer remain.
func (d *Decoder) take(n uint64) []byte {
	if d.err != nil || uint64(len(d.b)-d.off) < n {
		d.fail()
		return nil
	}
	v := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return v
}

func (d *Decoder) U8() byte {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *Decoder) U32() uint32 {
	if b := d.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *Decoder) U64() uint64 {
	if b := d.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// Bytes returns a sub-slice of the input (no copy).
func (d *Decoder) Bytes() []byte { return d.take(uint64(d.U32())) }

func (d *Decoder) String() string { return string(d.Bytes()) }

// Token is String for methods, header names and common header values: the
// frequent ones come back as constants instead of new allocations (an
// allocation costs ~200 ns in a Go wasm guest).
func (d *Decoder) Token() string {
	b := d.Bytes()
	switch string(b) { // compiled without converting b
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "PATCH":
		return "PATCH"
	case "HEAD":
		return "HEAD"
	case "OPTIONS":
		return "OPTIONS"
	case "Content-Type":
		return "Content-Type"
	case "Content-Length":
		return "Content-Length"
	case "X-Edgeshard-Shard":
		return "X-Edgeshard-Shard"
	case "Accept":
		return "Accept"
	case "User-Agent":
		return "User-Agent"
	case "Authorization":
		return "Authorization"
	case "X-User-Id":
		return "X-User-Id"
	case "application/json":
		return "application/json"
	case "text/plain; charset=utf-8":
		return "text/plain; charset=utf-8"
	}
	return string(b)
}

// Count reads a u32 element count and checks it against what the remaining
// input could hold (each element at least min bytes), so a hostile count
// cannot make the decoder allocate.
func (d *Decoder) Count(min int) int {
	n := d.U32()
	if d.err != nil {
		return 0
	}
	if min < 1 {
		min = 1
	}
	if uint64(n)*uint64(min) > uint64(len(d.b)-d.off) {
		d.fail()
		return 0
	}
	return int(n)
}

func encodeHeaders(e *Encoder, h []Header) {
	e.U32(uint32(len(h)))
	for _, f := range h {
		e.String(f.Name)
		e.String(f.Value)
	}
}

func decodeHeaders(d *Decoder) []Header { return decodeHeadersLike(d, nil) }

// decodeHeadersLike decodes a header list, reusing the value strings of
// prev (headers decoded earlier) where the name at the same index matches
// and the bytes are equal.
func decodeHeadersLike(d *Decoder, prev []Header) []Header {
	n := d.Count(8)
	if n == 0 {
		return nil
	}
	h := make([]Header, n)
	for i := range h {
		h[i].Name = d.Token()
		if i < len(prev) && prev[i].Name == h[i].Name {
			h[i].Value = d.like(prev[i].Value)
		} else {
			h[i].Value = d.Token()
		}
	}
	return h
}

// AppendRequest appends the encoding of r to b.
func AppendRequest(b []byte, r *Request) []byte {
	e := Encoder{B: b}
	e.String(r.Method)
	e.String(r.Path)
	encodeHeaders(&e, r.Header)
	e.Bytes(r.Body)
	return e.B
}

// DecodeRequest decodes a request; Body aliases b.
func DecodeRequest(b []byte) (*Request, error) { return DecodeRequestLike(b, nil) }

// DecodeRequestLike is DecodeRequest reusing the path and header strings of
// prev (a request decoded earlier) where the bytes are equal: a shard sees
// the same path and headers event after event, and strings are immutable,
// so sharing them is safe and saves an allocation each. Body aliases b.
func DecodeRequestLike(b []byte, prev *Request) (*Request, error) {
	d := NewDecoder(b)
	r := &Request{}
	r.Method = d.Token()
	var path string
	var header []Header
	if prev != nil {
		path, header = prev.Path, prev.Header
	}
	r.Path = d.like(path)
	r.Header = decodeHeadersLike(d, header)
	r.Body = d.Bytes()
	return r, d.Done()
}

// like reads a string, returning old when the bytes equal it.
func (d *Decoder) like(old string) string {
	b := d.Bytes()
	if string(b) == old { // compared without converting b
		return old
	}
	return string(b)
}

// AppendCallRequest appends the encoding of c to b: binding and key, then
// the request.
func AppendCallRequest(b []byte, c *CallRequest) []byte {
	e := Encoder{B: b}
	e.String(c.Binding)
	e.String(c.Key)
	return AppendRequest(e.B, &c.Request)
}

// DecodeCallRequest decodes a CallRequest; Body aliases b.
func DecodeCallRequest(b []byte) (*CallRequest, error) {
	d := NewDecoder(b)
	c := &CallRequest{}
	c.Binding = d.String()
	c.Key = d.String()
	if err := d.Err(); err != nil {
		return nil, err
	}
	r, err := DecodeRequest(b[d.off:])
	if err != nil {
		return nil, err
	}
	c.Request = *r
	return c, nil
}

// AppendResponse appends the encoding of r to b.
func AppendResponse(b []byte, r *Response) []byte {
	e := Encoder{B: b}
	e.U32(uint32(r.Status))
	encodeHeaders(&e, r.Header)
	e.Bytes(r.Body)
	return e.B
}

// DecodeResponse decodes a response; Body aliases b.
func DecodeResponse(b []byte) (*Response, error) {
	d := NewDecoder(b)
	r := &Response{}
	r.Status = int(d.U32())
	r.Header = decodeHeaders(d)
	r.Body = d.Bytes()
	return r, d.Done()
}

// AppendKeys appends a list of keys.
func AppendKeys(b []byte, keys []string) []byte {
	e := Encoder{B: b}
	encodeStrings(&e, keys)
	return e.B
}

// DecodeKeys decodes a list of keys (never nil).
func DecodeKeys(b []byte) ([]string, error) {
	d := NewDecoder(b)
	keys := decodeStrings(d)
	if keys == nil {
		keys = []string{}
	}
	return keys, d.Done()
}

// encodeStrings appends a list of strings (keys, a socket's tags): count
// u32, then each string.
func encodeStrings(e *Encoder, ss []string) {
	e.U32(uint32(len(ss)))
	for _, s := range ss {
		e.String(s)
	}
}

// decodeStrings reads what encodeStrings wrote; nil for none.
func decodeStrings(d *Decoder) []string {
	n := d.Count(4)
	if n == 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = d.String()
	}
	return out
}

// AppendKVs appends a list of entries.
func AppendKVs(b []byte, kvs []KV) []byte {
	e := Encoder{B: b}
	e.U32(uint32(len(kvs)))
	for _, kv := range kvs {
		e.String(kv.Key)
		e.Bytes(kv.Value)
	}
	return e.B
}

// DecodeKVs decodes a list of entries; values alias b.
func DecodeKVs(b []byte) ([]KV, error) {
	d := NewDecoder(b)
	n := d.Count(8)
	kvs := make([]KV, n)
	for i := range kvs {
		kvs[i].Key = d.String()
		kvs[i].Value = d.Bytes()
	}
	return kvs, d.Done()
}

// AppendListOptions appends list options.
func AppendListOptions(b []byte, o *ListOptions) []byte {
	e := Encoder{B: b}
	var flags uint32
	if o.HasStart {
		flags |= listHasStart
	}
	if o.HasStartAfter {
		flags |= listHasStartAfter
	}
	if o.HasEnd {
		flags |= listHasEnd
	}
	if o.Reverse {
		flags |= listReverse
	}
	e.U32(flags)
	e.U32(o.Limit)
	e.String(o.Prefix)
	e.String(o.Start)
	e.String(o.StartAfter)
	e.String(o.End)
	return e.B
}

// DecodeListOptions decodes list options.
func DecodeListOptions(b []byte) (ListOptions, error) {
	d := NewDecoder(b)
	var o ListOptions
	flags := d.U32()
	o.Limit = d.U32()
	o.Prefix = d.String()
	o.Start = d.String()
	o.StartAfter = d.String()
	o.End = d.String()
	o.HasStart = flags&listHasStart != 0
	o.HasStartAfter = flags&listHasStartAfter != 0
	o.HasEnd = flags&listHasEnd != 0
	o.Reverse = flags&listReverse != 0
	if err := d.Done(); err != nil {
		return o, err
	}
	if extra := flags &^ listFlags; extra != 0 {
		// Refused rather than ignored, so a later ABI can give them a meaning.
		return o, fmt.Errorf("%w: list options flags %#x: bits %#x are not defined", ErrMalformed, flags, extra)
	}
	return o, nil
}

func encodeValue(e *Encoder, v any) bool {
	switch x := v.(type) {
	case nil:
		e.U8(TagNull)
	case int64:
		e.U8(TagInt)
		e.U64(uint64(x))
	case int:
		e.U8(TagInt)
		e.U64(uint64(int64(x)))
	case int32:
		e.U8(TagInt)
		e.U64(uint64(int64(x)))
	case uint32:
		e.U8(TagInt)
		e.U64(uint64(x))
	case bool:
		e.U8(TagInt)
		if x {
			e.U64(1)
		} else {
			e.U64(0)
		}
	case float64:
		e.U8(TagFloat)
		e.U64(math.Float64bits(x))
	case string:
		e.U8(TagText)
		e.String(x)
	case []byte:
		e.U8(TagBlob)
		e.Bytes(x)
	default:
		return false
	}
	return true
}

func decodeValue(d *Decoder) any {
	switch d.U8() {
	case TagNull:
		return nil
	case TagInt:
		return int64(d.U64())
	case TagFloat:
		return math.Float64frombits(d.U64())
	case TagText:
		return d.String()
	case TagBlob:
		b := d.Bytes()
		return append([]byte(nil), b...)
	default:
		d.fail()
		return nil
	}
}

// ErrUnsupportedValue reports a SQL argument of a type the ABI cannot carry.
var ErrUnsupportedValue = errors.New("abi: unsupported SQL value type (use nil, int64, int, bool, float64, string or []byte)")

// AppendStatements appends a batch of SQL statements.
func AppendStatements(b []byte, stmts []Statement) ([]byte, error) {
	e := Encoder{B: b}
	e.U32(uint32(len(stmts)))
	for _, s := range stmts {
		e.String(s.SQL)
		e.U32(uint32(len(s.Args)))
		for _, a := range s.Args {
			if !encodeValue(&e, a) {
				return b, ErrUnsupportedValue
			}
		}
	}
	return e.B, nil
}

// DecodeStatements decodes a batch of SQL statements.
func DecodeStatements(b []byte) ([]Statement, error) {
	d := NewDecoder(b)
	n := d.Count(8)
	stmts := make([]Statement, n)
	for i := range stmts {
		stmts[i].SQL = d.String()
		na := d.Count(1)
		if na > 0 {
			stmts[i].Args = make([]any, na)
			for j := range stmts[i].Args {
				stmts[i].Args[j] = decodeValue(d)
			}
		}
	}
	return stmts, d.Done()
}

// AppendResults appends the results of a SQL batch.
func AppendResults(b []byte, rs []Result) []byte {
	e := Encoder{B: b}
	e.U32(uint32(len(rs)))
	for _, r := range rs {
		e.U64(uint64(r.RowsAffected))
		e.U64(uint64(r.LastInsertID))
		encodeStrings(&e, r.Columns)
		// Rows without columns carry no values, and the decoder rightly
		// refuses a row count it cannot check against the input: write none.
		rows := r.Rows
		if len(r.Columns) == 0 {
			rows = nil
		}
		e.U32(uint32(len(rows)))
		for _, row := range rows {
			for i := range r.Columns {
				var v any
				if i < len(row) {
					v = row[i]
				}
				if !encodeValue(&e, v) {
					e.U8(TagNull)
				}
			}
		}
	}
	return e.B
}

// DecodeResults decodes the results of a SQL batch.
func DecodeResults(b []byte) ([]Result, error) {
	d := NewDecoder(b)
	n := d.Count(24)
	rs := make([]Result, n)
	for i := range rs {
		r := &rs[i]
		r.RowsAffected = int64(d.U64())
		r.LastInsertID = int64(d.U64())
		nc := d.Count(4)
		r.Columns = make([]string, nc)
		for j := range r.Columns {
			r.Columns[j] = d.String()
		}
		nr := d.Count(nc)
		if nc == 0 && nr > 0 {
			d.fail()
			break
		}
		if nr > 0 {
			r.Rows = make([][]any, nr)
			for j := range r.Rows {
				row := make([]any, nc)
				for k := range row {
					row[k] = decodeValue(d)
				}
				r.Rows[j] = row
			}
		}
	}
	return rs, d.Done()
}

// AppendDataPoint appends an analytics data point.
func AppendDataPoint(b []byte, p *DataPoint) []byte {
	e := Encoder{B: b}
	encodeStrings(&e, p.Indexes)
	e.U32(uint32(len(p.Blobs)))
	for _, s := range p.Blobs {
		e.Bytes(s)
	}
	e.U32(uint32(len(p.Doubles)))
	for _, f := range p.Doubles {
		e.U64(math.Float64bits(f))
	}
	return e.B
}

// DecodeDataPoint decodes an analytics data point.
func DecodeDataPoint(b []byte) (DataPoint, error) {
	d := NewDecoder(b)
	var p DataPoint
	p.Indexes = decodeStrings(d)
	if n := d.Count(4); n > 0 {
		p.Blobs = make([][]byte, n)
		for i := range p.Blobs {
			p.Blobs[i] = append([]byte(nil), d.Bytes()...)
		}
	}
	if n := d.Count(8); n > 0 {
		p.Doubles = make([]float64, n)
		for i := range p.Doubles {
			p.Doubles[i] = math.Float64frombits(d.U64())
		}
	}
	return p, d.Done()
}

// AppendLogRecord appends a log record.
func AppendLogRecord(b []byte, r *LogRecord) []byte {
	e := Encoder{B: b}
	e.String(r.Message)
	encodeHeaders(&e, r.Fields)
	return e.B
}

// DecodeLogRecord decodes a log record.
func DecodeLogRecord(b []byte) (LogRecord, error) {
	d := NewDecoder(b)
	var r LogRecord
	r.Message = d.String()
	r.Fields = decodeHeaders(d)
	return r, d.Done()
}
