package analytics

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

var frozen = time.UnixMilli(1_700_000_000_123)

func frozenNow() time.Time { return frozen }

// openSink opens a sink whose background writer never fires on its own
// (unless opts says otherwise), so tests decide when points are written.
func openSink(t *testing.T, opts SinkOptions) (*SQLiteSink, string) {
	t.Helper()
	url := "sqlite://" + filepath.Join(t.TempDir(), "analytics.db")
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Hour
	}
	if opts.Now == nil {
		opts.Now = frozenNow
	}
	s, err := OpenSQLite(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

func count(t *testing.T, s *SQLiteSink, dataset string) int64 {
	t.Helper()
	rows, err := s.Query(context.Background(), "SELECT count(*) AS n FROM analytics_events WHERE dataset = ?", dataset)
	if err != nil {
		t.Fatal(err)
	}
	return rows[0]["n"].(int64)
}

func TestSQLiteSinkFlushPersists(t *testing.T) {
	s, _ := openSink(t, SinkOptions{})
	ctx := context.Background()
	blob := []byte("GET")
	p := abi.DataPoint{
		Indexes: []string{"capsule-1"},
		Blobs:   [][]byte{blob, {0xff, 0x00}, {}},
		Doubles: []float64{1.5, -2},
	}
	if err := s.Write("telemetry", p); err != nil {
		t.Fatal(err)
	}
	blob[0] = 'P' // Write copied the point
	if err := s.Write("telemetry", abi.DataPoint{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Write("other", abi.DataPoint{Doubles: []float64{7}}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "telemetry"); n != 0 {
		t.Fatalf("%d points visible before Flush", n)
	}
	if s.Buffered() != 3 {
		t.Fatalf("Buffered = %d, want 3", s.Buffered())
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Buffered() != 0 {
		t.Fatalf("Buffered after Flush = %d", s.Buffered())
	}

	rows, err := s.Query(ctx, `SELECT dataset, timestamp, index1, blob1, blob2, blob3, blob4, typeof(blob1) AS t1,
		double1, double2, double3, _sample_interval FROM analytics_events WHERE dataset = ? ORDER BY rowid`, "telemetry")
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{
		{"dataset": "telemetry", "timestamp": frozen.UnixMilli(), "index1": "capsule-1",
			"blob1": "GET", "blob2": []byte{0xff, 0x00}, "blob3": "", "blob4": nil, "t1": "text",
			"double1": 1.5, "double2": -2.0, "double3": nil, "_sample_interval": int64(1)},
		{"dataset": "telemetry", "timestamp": frozen.UnixMilli(), "index1": "",
			"blob1": nil, "blob2": nil, "blob3": nil, "blob4": nil, "t1": "null",
			"double1": nil, "double2": nil, "double3": nil, "_sample_interval": int64(1)},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows\n got %#v\nwant %#v", rows, want)
	}
	// AE-style SQL on text blobs works.
	rows, err = s.Query(ctx, "SELECT count(*) AS n FROM analytics_events WHERE blob1 = 'GET'")
	if err != nil || rows[0]["n"] != int64(1) {
		t.Errorf("blob1 = 'GET': %v %v", rows, err)
	}
	if n := count(t, s, "other"); n != 1 {
		t.Errorf("other dataset: %d points", n)
	}
	if _, err := s.Query(ctx, "SELECT nope FROM analytics_events"); err == nil || !strings.Contains(err.Error(), "no such column: nope") {
		t.Errorf("bad query: %v", err)
	}
}

func TestSQLiteSinkClosePersists(t *testing.T) {
	s, url := openSink(t, SinkOptions{BatchSize: 7})
	for i := 0; i < 50; i++ {
		if err := s.Write("d", abi.DataPoint{Doubles: []float64{float64(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Write("d", abi.DataPoint{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}

	// Reopen the file: every point is there, in order.
	s2, err := OpenSQLite(url, SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	rows, err := s2.Query(context.Background(), "SELECT double1 FROM analytics_events ORDER BY rowid")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 50 {
		t.Fatalf("%d points after reopen, want 50", len(rows))
	}
	for i, r := range rows {
		if r["double1"] != float64(i) {
			t.Fatalf("row %d: %v", i, r)
		}
	}
}

func TestSQLiteSinkBackgroundFlush(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts SinkOptions
	}{
		{"interval", SinkOptions{FlushInterval: 10 * time.Millisecond}},
		{"batch size", SinkOptions{BatchSize: 5}}, // interval one hour: only the size wakes it
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openSink(t, tc.opts)
			for i := 0; i < 5; i++ {
				if err := s.Write("d", abi.DataPoint{}); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for count(t, s, "d") != 5 {
				if time.Now().After(deadline) {
					t.Fatal("background writer did not flush")
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

func TestSQLiteSinkBufferFull(t *testing.T) {
	s, _ := openSink(t, SinkOptions{MaxBuffered: 3})
	for i := 0; i < 3; i++ {
		if err := s.Write("d", abi.DataPoint{}); err != nil {
			t.Fatal(err)
		}
	}
	err := s.Write("d", abi.DataPoint{})
	if !errors.Is(err, ErrBufferFull) || err.Error() != "analytics: buffer full: 3 points waiting, at most 3" {
		t.Fatalf("Write on a full buffer: %v", err)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Write("d", abi.DataPoint{}); err != nil {
		t.Fatalf("Write after Flush: %v", err)
	}
	if err := s.Write("d", abi.DataPoint{Indexes: []string{"a", "b"}}); !errors.Is(err, ErrLimit) {
		t.Errorf("invalid point: %v", err)
	}
}

// TestSQLiteSinkFlushFailureKeepsPoints: a failed batch stays buffered, is
// reported to OnError by the background writer, and is written later.
func TestSQLiteSinkFlushFailureKeepsPoints(t *testing.T) {
	db, err := sqldb.Open("sqlite://"+filepath.Join(t.TempDir(), "shared.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mu sync.Mutex
	var reported []error
	s, err := NewSQLiteSink(db, SinkOptions{
		FlushInterval: 5 * time.Millisecond,
		Now:           frozenNow,
		OnError: func(err error) {
			mu.Lock()
			reported = append(reported, err)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := db.SQL().Exec("DROP TABLE analytics_events"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := s.Write("d", abi.DataPoint{Doubles: []float64{float64(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(reported)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no background flush error reported")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	first := reported[0]
	mu.Unlock()
	if !strings.Contains(first.Error(), "analytics: flush 4 points:") || !strings.Contains(first.Error(), "no such table") {
		t.Errorf("reported %v", first)
	}
	if s.Buffered() != 4 {
		t.Errorf("Buffered = %d after failures, want 4", s.Buffered())
	}

	if _, err := db.SQL().Exec(createTableSQL(db.Dialect())); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// NewSQLiteSink's Close leaves the caller's database open.
	res, err := db.Batch(ctx, []abi.Statement{{SQL: "SELECT double1 FROM analytics_events ORDER BY rowid"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]any{{0.0}, {1.0}, {2.0}, {3.0}}; !reflect.DeepEqual(res[0].Rows, want) {
		t.Errorf("rows %v, want %v", res[0].Rows, want)
	}
}

func TestSQLiteSinkConcurrentWriters(t *testing.T) {
	s, _ := openSink(t, SinkOptions{FlushInterval: time.Millisecond, BatchSize: 16})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for i := 0; i < 200; i++ {
				if err := s.Write("d", abi.DataPoint{Blobs: [][]byte{[]byte("x")}}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "d"); n != 1600 {
		t.Errorf("%d points, want 1600", n)
	}
}

func TestSinkOptionsErrors(t *testing.T) {
	for _, o := range []SinkOptions{{FlushInterval: -1}, {MaxBuffered: -1}, {BatchSize: -1}} {
		if _, err := OpenSQLite("sqlite://:memory:", o); err == nil {
			t.Errorf("OpenSQLite with %+v succeeded", o)
		}
	}
	if _, err := OpenSQLite("mysql://x", SinkOptions{}); err == nil || !strings.Contains(err.Error(), `unknown scheme "mysql://"`) {
		t.Errorf("bad scheme: %v", err)
	}
}

func BenchmarkSQLiteSinkWrite(b *testing.B) {
	url := "sqlite://" + filepath.Join(b.TempDir(), "analytics.db")
	s, err := OpenSQLite(url, SinkOptions{MaxBuffered: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p := abi.DataPoint{
		Indexes: []string{"capsule-1"},
		Blobs:   [][]byte{[]byte("run.finished"), []byte("ok"), []byte("eu-west")},
		Doubles: []float64{12, 1, 0.5},
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Write("telemetry", p); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}
