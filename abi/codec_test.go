package abi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"testing"
	"unsafe"

	"github.com/edgeshard/edgeshard/abi"
)

// kind is one message type of the wire format, with what the tests need
// to encode, decode, compare and generate it.
type kind struct {
	name   string
	encode func(v any) []byte
	decode func(b []byte) (any, error)
	gen    func(g *gen) any
	sample any // a value using every field
}

var kinds = []kind{
	{
		name:   "Request",
		encode: func(v any) []byte { return abi.AppendRequest(nil, v.(*abi.Request)) },
		decode: func(b []byte) (any, error) { return abi.DecodeRequest(b) },
		gen: func(g *gen) any {
			return &abi.Request{Method: g.str(), Path: g.str(), Header: g.headers(), Body: g.bytes()}
		},
		sample: &abi.Request{Method: "POST", Path: "/increment?by=2", Header: []abi.Header{{"A", "1"}, {"a", "2"}, {"", ""}}, Body: []byte("{\x00\xff}")},
	},
	{
		name:   "CallRequest",
		encode: func(v any) []byte { return abi.AppendCallRequest(nil, v.(*abi.CallRequest)) },
		decode: func(b []byte) (any, error) { return abi.DecodeCallRequest(b) },
		gen: func(g *gen) any {
			return &abi.CallRequest{Binding: g.str(), Key: g.str(), Request: abi.Request{Method: g.str(), Path: g.str(), Header: g.headers(), Body: g.bytes()}}
		},
		sample: &abi.CallRequest{Binding: "ROOMS", Key: "lobby", Request: abi.Request{Method: "GET", Path: "/members", Header: []abi.Header{{"A", "1"}}, Body: []byte("x")}},
	},
	{
		name:   "Response",
		encode: func(v any) []byte { return abi.AppendResponse(nil, v.(*abi.Response)) },
		decode: func(b []byte) (any, error) { return abi.DecodeResponse(b) },
		gen: func(g *gen) any {
			return &abi.Response{Status: int(g.u32()), Header: g.headers(), Body: g.bytes()}
		},
		sample: &abi.Response{Status: 201, Header: []abi.Header{{"Content-Type", "application/json"}}, Body: []byte(`{"ok":true}`)},
	},
	{
		name:   "Keys",
		encode: func(v any) []byte { return abi.AppendKeys(nil, v.([]string)) },
		decode: func(b []byte) (any, error) { return abi.DecodeKeys(b) },
		gen: func(g *gen) any {
			keys := make([]string, g.n(6))
			for i := range keys {
				keys[i] = g.str()
			}
			return keys
		},
		sample: []string{"a", "", "\xff\x00", "counter:post:123"},
	},
	{
		name:   "KVs",
		encode: func(v any) []byte { return abi.AppendKVs(nil, v.([]abi.KV)) },
		decode: func(b []byte) (any, error) { return abi.DecodeKVs(b) },
		gen: func(g *gen) any {
			kvs := make([]abi.KV, g.n(6))
			for i := range kvs {
				kvs[i] = abi.KV{Key: g.str(), Value: g.bytes()}
			}
			return kvs
		},
		sample: []abi.KV{{"a", []byte("1")}, {"", nil}, {"b", []byte{0, 0xff}}},
	},
	{
		name:   "ListOptions",
		encode: func(v any) []byte { o := v.(abi.ListOptions); return abi.AppendListOptions(nil, &o) },
		decode: func(b []byte) (any, error) { return abi.DecodeListOptions(b) },
		gen: func(g *gen) any {
			f := g.byte()
			return abi.ListOptions{Prefix: g.str(), Start: g.str(), StartAfter: g.str(), End: g.str(),
				HasStart: f&1 != 0, HasStartAfter: f&2 != 0, HasEnd: f&4 != 0, Reverse: f&8 != 0, Limit: g.u32()}
		},
		sample: abi.ListOptions{Prefix: "p:", Start: "p:a", End: "p:z", HasStart: true, HasEnd: true, Reverse: true, Limit: 10},
	},
	{
		name: "Statements",
		encode: func(v any) []byte {
			b, err := abi.AppendStatements(nil, v.([]abi.Statement))
			if err != nil {
				panic(err)
			}
			return b
		},
		decode: func(b []byte) (any, error) { return abi.DecodeStatements(b) },
		gen: func(g *gen) any {
			stmts := make([]abi.Statement, g.n(4))
			for i := range stmts {
				stmts[i].SQL = g.str()
				if n := g.n(5); n > 0 {
					stmts[i].Args = make([]any, n)
					for j := range stmts[i].Args {
						stmts[i].Args[j] = g.value()
					}
				}
			}
			return stmts
		},
		sample: []abi.Statement{
			{SQL: "INSERT INTO t VALUES (?, ?, ?, ?, ?)", Args: []any{nil, int64(-1), math.Inf(-1), "text", []byte{0}}},
			{SQL: "SELECT 1"},
		},
	},
	{
		name:   "Results",
		encode: func(v any) []byte { return abi.AppendResults(nil, v.([]abi.Result)) },
		decode: func(b []byte) (any, error) { return abi.DecodeResults(b) },
		gen: func(g *gen) any {
			rs := make([]abi.Result, g.n(3))
			for i := range rs {
				r := &rs[i]
				r.RowsAffected, r.LastInsertID = int64(g.u64()), int64(g.u64())
				r.Columns = make([]string, g.n(3))
				for j := range r.Columns {
					r.Columns[j] = g.str()
				}
				if len(r.Columns) > 0 {
					if n := g.n(3); n > 0 {
						r.Rows = make([][]any, n)
						for j := range r.Rows {
							r.Rows[j] = make([]any, len(r.Columns))
							for k := range r.Rows[j] {
								r.Rows[j][k] = g.value()
							}
						}
					}
				}
			}
			return rs
		},
		sample: []abi.Result{
			{Columns: []string{"id", "name", "score", "blob", "none"}, Rows: [][]any{{int64(1), "a", 1.5, []byte{1}, nil}, {int64(math.MinInt64), "", math.NaN(), []byte{}, nil}}},
			{RowsAffected: 3, LastInsertID: -7},
		},
	},
	{
		name:   "DataPoint",
		encode: func(v any) []byte { p := v.(abi.DataPoint); return abi.AppendDataPoint(nil, &p) },
		decode: func(b []byte) (any, error) { return abi.DecodeDataPoint(b) },
		gen: func(g *gen) any {
			var p abi.DataPoint
			if n := g.n(2); n > 0 {
				p.Indexes = make([]string, n)
				for i := range p.Indexes {
					p.Indexes[i] = g.str()
				}
			}
			if n := g.n(4); n > 0 {
				p.Blobs = make([][]byte, n)
				for i := range p.Blobs {
					p.Blobs[i] = g.bytes()
				}
			}
			if n := g.n(4); n > 0 {
				p.Doubles = make([]float64, n)
				for i := range p.Doubles {
					p.Doubles[i] = math.Float64frombits(g.u64())
				}
			}
			return p
		},
		sample: abi.DataPoint{Indexes: []string{"post:1"}, Blobs: [][]byte{[]byte("like"), nil}, Doubles: []float64{1, -0.0, math.MaxFloat64}},
	},
	{
		name:   "LogRecord",
		encode: func(v any) []byte { r := v.(abi.LogRecord); return abi.AppendLogRecord(nil, &r) },
		decode: func(b []byte) (any, error) { return abi.DecodeLogRecord(b) },
		gen:    func(g *gen) any { return abi.LogRecord{Message: g.str(), Fields: g.headers()} },
		sample: abi.LogRecord{Message: "flush ok", Fields: []abi.Header{{"code", "E-VIBECODR-2140"}, {"count", "3"}}},
	},
}

// gen draws values from fuzz input: every byte string yields some value,
// and running out of input yields zeros.
type gen struct{ b []byte }

func (g *gen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *gen) n(max int) int { return int(g.byte()) % (max + 1) }

func (g *gen) bytes() []byte {
	n := g.n(48)
	if n == 0 && g.byte()&1 == 0 {
		return nil
	}
	n = min(n, len(g.b))
	out := bytes.Clone(g.b[:n])
	g.b = g.b[n:]
	return out
}

func (g *gen) str() string { return string(g.bytes()) }

func (g *gen) u32() uint32 {
	var b [4]byte
	for i := range b {
		b[i] = g.byte()
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (g *gen) u64() uint64 { return uint64(g.u32()) | uint64(g.u32())<<32 }

func (g *gen) headers() []abi.Header {
	n := g.n(4)
	if n == 0 {
		return nil
	}
	h := make([]abi.Header, n)
	for i := range h {
		h[i] = abi.Header{Name: g.str(), Value: g.str()}
	}
	return h
}

func (g *gen) value() any {
	switch g.n(4) {
	case 1:
		return int64(g.u64())
	case 2:
		return math.Float64frombits(g.u64())
	case 3:
		return g.str()
	case 4:
		b := g.bytes()
		if b == nil {
			b = []byte{}
		}
		return b
	}
	return nil
}

// canon turns a message into a comparable tree: nil and empty slices alike,
// floats by their bits (NaN equals itself), text and blobs kept apart.
func canon(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Invalid:
		return nil
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return canon(v.Elem())
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return "b:" + string(v.Bytes())
		}
		out := []any{}
		for i := 0; i < v.Len(); i++ {
			out = append(out, canon(v.Index(i)))
		}
		return out
	case reflect.Struct:
		out := []any{}
		for i := 0; i < v.NumField(); i++ {
			out = append(out, canon(v.Field(i)))
		}
		return out
	case reflect.String:
		return "s:" + v.String()
	case reflect.Float64:
		return fmt.Sprintf("f:%x", math.Float64bits(v.Float()))
	case reflect.Int, reflect.Int64:
		return v.Int()
	case reflect.Uint32:
		return int64(v.Uint())
	case reflect.Bool:
		return v.Bool()
	}
	panic("canon: unexpected " + v.Kind().String())
}

func same(a, b any) bool {
	return reflect.DeepEqual(canon(reflect.ValueOf(a)), canon(reflect.ValueOf(b)))
}

// roundTrip encodes v, decodes it and checks the value and the re-encoding.
func roundTrip(t *testing.T, k kind, v any) {
	t.Helper()
	enc := k.encode(v)
	got, err := k.decode(enc)
	if err != nil {
		t.Fatalf("%s: decode(encode(%#v)) = %v", k.name, v, err)
	}
	if !same(v, got) {
		t.Fatalf("%s round trip:\n got %#v\nwant %#v", k.name, got, v)
	}
	if again := k.encode(got); !bytes.Equal(again, enc) {
		t.Fatalf("%s: re-encoding differs:\n%x\n%x", k.name, again, enc)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			roundTrip(t, k, k.sample)
			zero := reflect.Zero(reflect.TypeOf(k.sample))
			if zero.Kind() == reflect.Pointer {
				zero = reflect.New(zero.Type().Elem())
			}
			roundTrip(t, k, zero.Interface())
			for seed := 0; seed < 200; seed++ {
				b := make([]byte, 256)
				for i := range b {
					b[i] = byte(i*seed + seed>>1)
				}
				roundTrip(t, k, k.gen(&gen{b: b}))
			}
		})
	}
}

func TestDecodeRejectsTruncationAndTrailingBytes(t *testing.T) {
	for _, k := range kinds {
		enc := k.encode(k.sample)
		for n := 0; n < len(enc); n++ {
			if _, err := k.decode(enc[:n]); !errors.Is(err, abi.ErrMalformed) {
				t.Errorf("%s: first %d of %d bytes decoded (%v)", k.name, n, len(enc), err)
			}
		}
		if _, err := k.decode(append(bytes.Clone(enc), 0)); !errors.Is(err, abi.ErrMalformed) {
			t.Errorf("%s: a trailing byte was accepted (%v)", k.name, err)
		}
	}
}

// allocBytes reports how many heap bytes fn allocates.
// allocBytes returns the bytes fn allocates: the least of three runs, as
// TotalAlloc is process-wide and another goroutine (the race detector's,
// the test framework's) sometimes allocates during one of them; an
// allocation of fn's own shows in every run.
func allocBytes(fn func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 3 {
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		fn()
		runtime.ReadMemStats(&b)
		least = min(least, b.TotalAlloc-a.TotalAlloc)
	}
	return least
}

// TestHostileCounts: a count claiming billions of elements with no input
// to back it is refused without allocating for them.
func TestHostileCounts(t *testing.T) {
	le := binary.LittleEndian
	huge := []uint32{math.MaxUint32, 1 << 31, 1 << 24, 1000}
	for _, n := range huge {
		count := le.AppendUint32(nil, n)
		str0 := le.AppendUint32(nil, 0) // an empty string
		inputs := map[string][]byte{
			"Request headers":   slices(str0, str0, count, make([]byte, 16)),
			"Response headers":  slices(le.AppendUint32(nil, 200), count, make([]byte, 16)),
			"Keys":              slices(count, make([]byte, 16)),
			"KVs":               slices(count, make([]byte, 16)),
			"Statements":        slices(count, make([]byte, 16)),
			"Statement args":    slices(le.AppendUint32(nil, 1), str0, count, make([]byte, 16)),
			"Results":           slices(count, make([]byte, 16)),
			"Result columns":    slices(le.AppendUint32(nil, 1), make([]byte, 16), count, make([]byte, 16)),
			"Result rows":       slices(le.AppendUint32(nil, 1), make([]byte, 16), le.AppendUint32(nil, 1), str0, count, make([]byte, 16)),
			"DataPoint indexes": slices(count, make([]byte, 16)),
			"DataPoint blobs":   slices(str0, count, make([]byte, 16)),
			"DataPoint doubles": slices(str0, str0, count, make([]byte, 16)),
			"LogRecord fields":  slices(str0, count, make([]byte, 16)),
			"Bytes length":      slices(count, make([]byte, 16)),
		}
		decoders := map[string]func([]byte) error{
			"Request headers":   func(b []byte) error { _, err := abi.DecodeRequest(b); return err },
			"Response headers":  func(b []byte) error { _, err := abi.DecodeResponse(b); return err },
			"Keys":              func(b []byte) error { _, err := abi.DecodeKeys(b); return err },
			"KVs":               func(b []byte) error { _, err := abi.DecodeKVs(b); return err },
			"Statements":        func(b []byte) error { _, err := abi.DecodeStatements(b); return err },
			"Statement args":    func(b []byte) error { _, err := abi.DecodeStatements(b); return err },
			"Results":           func(b []byte) error { _, err := abi.DecodeResults(b); return err },
			"Result columns":    func(b []byte) error { _, err := abi.DecodeResults(b); return err },
			"Result rows":       func(b []byte) error { _, err := abi.DecodeResults(b); return err },
			"DataPoint indexes": func(b []byte) error { _, err := abi.DecodeDataPoint(b); return err },
			"DataPoint blobs":   func(b []byte) error { _, err := abi.DecodeDataPoint(b); return err },
			"DataPoint doubles": func(b []byte) error { _, err := abi.DecodeDataPoint(b); return err },
			"LogRecord fields":  func(b []byte) error { _, err := abi.DecodeLogRecord(b); return err },
			"Bytes length":      func(b []byte) error { _, err := abi.DecodeLogRecord(b); return err },
		}
		for name, in := range inputs {
			var err error
			got := allocBytes(func() { err = decoders[name](in) })
			if !errors.Is(err, abi.ErrMalformed) {
				t.Errorf("%s count %d: err = %v, want ErrMalformed", name, n, err)
			}
			if got > 4096 {
				t.Errorf("%s count %d: decoding %d bytes allocated %d bytes", name, n, len(in), got)
			}
		}
	}
}

func slices(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestDecodeRejectsUnknownValueTags(t *testing.T) {
	stmts, _ := abi.AppendStatements(nil, []abi.Statement{{SQL: "x", Args: []any{nil}}})
	for tag := 5; tag < 256; tag++ {
		stmts[len(stmts)-1] = byte(tag)
		if _, err := abi.DecodeStatements(stmts); !errors.Is(err, abi.ErrMalformed) {
			t.Fatalf("statement value tag %d accepted", tag)
		}
	}
	rs := abi.AppendResults(nil, []abi.Result{{Columns: []string{"c"}, Rows: [][]any{{nil}}}})
	rs[len(rs)-1] = 0xff
	if _, err := abi.DecodeResults(rs); !errors.Is(err, abi.ErrMalformed) {
		t.Fatal("result value tag 255 accepted")
	}
}

func TestResultsRowsNeedColumns(t *testing.T) {
	// Rows without columns encode as no rows: they carry no values.
	enc := abi.AppendResults(nil, []abi.Result{{Rows: [][]any{{}, {}}, RowsAffected: 2}})
	rs, err := abi.DecodeResults(enc)
	if err != nil || len(rs) != 1 || len(rs[0].Rows) != 0 || rs[0].RowsAffected != 2 {
		t.Fatalf("DecodeResults = %+v, %v", rs, err)
	}
	// A hand-made row count without columns is refused.
	le := binary.LittleEndian
	raw := slices(le.AppendUint32(nil, 1), make([]byte, 16), le.AppendUint32(nil, 0), le.AppendUint32(nil, 3), []byte{0, 0, 0})
	if _, err := abi.DecodeResults(raw); !errors.Is(err, abi.ErrMalformed) {
		t.Fatalf("rows without columns: %v", err)
	}
}

func TestAppendResultsShapesRows(t *testing.T) {
	enc := abi.AppendResults(nil, []abi.Result{{
		Columns: []string{"a", "b"},
		Rows:    [][]any{{int64(1)}, {int64(1), int64(2), int64(3)}, {struct{}{}, true}},
	}})
	rs, err := abi.DecodeResults(enc)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]any{{int64(1), nil}, {int64(1), int64(2)}, {nil, int64(1)}}
	if !reflect.DeepEqual(rs[0].Rows, want) {
		t.Fatalf("rows %#v, want %#v (short rows padded, long cut, unsupported values null)", rs[0].Rows, want)
	}
}

func TestAppendStatementsValues(t *testing.T) {
	b, err := abi.AppendStatements([]byte("prefix"), []abi.Statement{{SQL: "s", Args: []any{1, int32(-2), uint32(3), true, false}}})
	if err != nil {
		t.Fatal(err)
	}
	stmts, err := abi.DecodeStatements(b[len("prefix"):])
	if err != nil {
		t.Fatal(err)
	}
	if want := []any{int64(1), int64(-2), int64(3), int64(1), int64(0)}; !reflect.DeepEqual(stmts[0].Args, want) {
		t.Fatalf("args %#v, want %#v", stmts[0].Args, want)
	}
	orig := []byte("prefix")
	out, err := abi.AppendStatements(orig, []abi.Statement{{SQL: "ok", Args: []any{1}}, {SQL: "bad", Args: []any{map[string]int{}}}})
	if !errors.Is(err, abi.ErrUnsupportedValue) || string(out) != "prefix" {
		t.Fatalf("unsupported value: %q, %v", out, err)
	}
}

// TestDecodedBytesOwnership: request and response bodies and KV values
// alias the input but cannot grow into it; SQL blobs and data point blobs
// are copies.
func TestDecodedBytesOwnership(t *testing.T) {
	enc := abi.AppendRequest(nil, &abi.Request{Method: "GET", Body: []byte("ab")})
	enc = append(enc, "tail"...)
	d := abi.NewDecoder(enc)
	d.Bytes() // method
	d.Bytes() // path
	d.Count(8)
	body := d.Bytes()
	_ = append(body, 'X')
	if string(enc[len(enc)-4:]) != "tail" {
		t.Fatal("appending to a decoded body overwrote the input after it")
	}
	stmts, _ := abi.AppendStatements(nil, []abi.Statement{{SQL: "s", Args: []any{[]byte("blob")}}})
	got, _ := abi.DecodeStatements(stmts)
	copy(stmts[len(stmts)-4:], "XXXX")
	if string(got[0].Args[0].([]byte)) != "blob" {
		t.Fatal("a decoded SQL blob aliases the input")
	}
	dp := abi.AppendDataPoint(nil, &abi.DataPoint{Blobs: [][]byte{[]byte("blob")}})
	p, _ := abi.DecodeDataPoint(dp)
	copy(dp[12:], "XXXX")
	if string(p.Blobs[0]) != "blob" {
		t.Fatal("a decoded data point blob aliases the input")
	}
}

func TestDecoderErrorsAreSticky(t *testing.T) {
	d := abi.NewDecoder([]byte{1, 2, 3})
	if v := d.U32(); v != 0 || d.Err() == nil {
		t.Fatalf("short U32 = %d, err %v", v, d.Err())
	}
	d = abi.NewDecoder([]byte{1, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9})
	d.U64() // fine
	d.U64() // short
	if d.U8() != 0 || d.U32() != 0 || d.Bytes() != nil || d.String() != "" || d.Count(0) != 0 || d.U64() != 0 {
		t.Fatal("reads after an error returned data")
	}
	if !errors.Is(d.Done(), abi.ErrMalformed) {
		t.Fatal("Done after an error is nil")
	}
	d = abi.NewDecoder([]byte{2, 0, 0, 0, 0})
	if n := d.Count(0); n != 0 || d.Err() == nil {
		t.Fatalf("Count(0) of 2 with one byte left = %d, err %v (a minimum below 1 counts as 1)", n, d.Err())
	}
	d = abi.NewDecoder([]byte{0})
	d.U8()
	if d.Done() != nil {
		t.Fatal("Done after consuming everything")
	}
}

func TestGetHeader(t *testing.T) {
	h := []abi.Header{{"Content-Type", "a"}, {"content-type", "b"}, {"X-Ünï", "c"}}
	for name, want := range map[string]string{"content-type": "a", "CONTENT-TYPE": "a", "x-Ünï": "c", "X-ÜNÏ": "", "missing": "", "": ""} {
		if got := abi.GetHeader(h, name); got != want {
			t.Errorf("GetHeader(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestDecodeRequestLike: equal path and header values come back as the
// previous request's strings (no new allocation); different ones decode as
// usual; methods and common names come back as constants.
func TestDecodeRequestLike(t *testing.T) {
	prev := &abi.Request{Method: "POST", Path: "/check", Header: []abi.Header{{Name: "X-Edgeshard-Shard", Value: "RL/7"}}}
	enc := abi.AppendRequest(nil, &abi.Request{Method: "POST", Path: "/check", Header: []abi.Header{{Name: "X-Edgeshard-Shard", Value: "RL/7"}}, Body: []byte("b")})
	r, err := abi.DecodeRequestLike(enc, prev)
	if err != nil {
		t.Fatal(err)
	}
	if unsafe.StringData(r.Path) != unsafe.StringData(prev.Path) || unsafe.StringData(r.Header[0].Value) != unsafe.StringData(prev.Header[0].Value) {
		t.Error("equal strings were not reused")
	}
	if string(r.Body) != "b" || r.Method != "POST" {
		t.Errorf("decoded %+v", r)
	}
	enc = abi.AppendRequest(nil, &abi.Request{Method: "GET", Path: "/other", Header: []abi.Header{{Name: "X-Edgeshard-Shard", Value: "RL/8"}, {Name: "Accept", Value: "*/*"}}})
	r, err = abi.DecodeRequestLike(enc, prev)
	if err != nil {
		t.Fatal(err)
	}
	if r.Path != "/other" || r.Header[0].Value != "RL/8" || r.Header[1] != (abi.Header{"Accept", "*/*"}) || r.Method != "GET" {
		t.Errorf("decoded %+v", r)
	}
	if allocs := testing.AllocsPerRun(100, func() { abi.DecodeRequestLike(enc, r) }); allocs > 2 {
		t.Errorf("%v allocations decoding a request like the previous one, want ≤ 2 (request, header slice)", allocs)
	}
}
