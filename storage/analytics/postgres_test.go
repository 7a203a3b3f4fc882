package analytics

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/pgtest"
)

// TestSinkOnPostgres: the sink writes the same layout to PostgreSQL (blobs
// as BYTEA, read back as bytes; AE-style blob1 = 'GET' still matches), one
// batch per flush, and what Close flushed is there when the dataset is
// opened again.
func TestSinkOnPostgres(t *testing.T) {
	url := pgtest.DB(t)
	s, err := OpenSQLite(url, SinkOptions{FlushInterval: time.Hour, Now: frozenNow, BatchSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Write("telemetry", abi.DataPoint{Indexes: []string{"capsule-1"}, Blobs: [][]byte{[]byte("GET"), {0xff, 0x00}, {}}, Doubles: []float64{1.5, -2}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := s.Write("d", abi.DataPoint{Doubles: []float64{float64(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Query(ctx, `SELECT dataset, timestamp, index1, blob1, blob2, blob3, blob4, double1, double2, double3, _sample_interval
		FROM analytics_events WHERE dataset = ?`, "telemetry")
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{{"dataset": "telemetry", "timestamp": frozen.UnixMilli(), "index1": "capsule-1",
		"blob1": []byte("GET"), "blob2": []byte{0xff, 0x00}, "blob3": []byte{}, "blob4": nil,
		"double1": 1.5, "double2": -2.0, "double3": nil, "_sample_interval": int64(1)}}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows\n got %#v\nwant %#v", rows, want)
	}
	if rows, err := s.Query(ctx, "SELECT count(*) AS n FROM analytics_events WHERE blob1 = 'GET'"); err != nil || rows[0]["n"] != int64(1) {
		t.Errorf("blob1 = 'GET': %v %v", rows, err)
	}
	for i := 20; i < 30; i++ {
		if err := s.Write("d", abi.DataPoint{Doubles: []float64{float64(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSQLite(url, SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	rows, err = s2.Query(ctx, "SELECT double1 FROM analytics_events WHERE dataset = 'd' ORDER BY double1")
	if err != nil || len(rows) != 30 || rows[29]["double1"] != 29.0 {
		t.Fatalf("after reopen: %d rows, %v", len(rows), err)
	}
}
