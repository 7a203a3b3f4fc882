package analytics

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgeshard/edgeshard/abi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func blobs(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{'b'}, size)
	}
	return out
}

func TestValidate(t *testing.T) {
	ok := []abi.DataPoint{
		{},
		{Indexes: []string{strings.Repeat("i", abi.MaxAnalyticsIdxB)}},
		{Blobs: blobs(abi.MaxAnalyticsBlob, abi.MaxAnalyticsBlobTotal/abi.MaxAnalyticsBlob)},
		{Blobs: [][]byte{make([]byte, abi.MaxAnalyticsBlobTotal)}},
		{Doubles: make([]float64, abi.MaxAnalyticsDbl)},
	}
	for i, p := range ok {
		if err := Validate(p); err != nil {
			t.Errorf("ok point %d: %v", i, err)
		}
	}
	bad := []struct {
		p    abi.DataPoint
		want string
	}{
		{abi.DataPoint{Indexes: []string{"a", "b", "c"}}, "analytics: 3 indexes, at most 1 allowed"},
		{abi.DataPoint{Indexes: []string{strings.Repeat("i", 97)}}, "analytics: index is 97 bytes, at most 96 allowed"},
		{abi.DataPoint{Blobs: blobs(21, 1)}, "analytics: 21 blobs, at most 20 allowed"},
		{abi.DataPoint{Blobs: [][]byte{make([]byte, 10000), make([]byte, 6385)}}, "analytics: blobs total 16385 bytes, at most 16384 allowed"},
		{abi.DataPoint{Doubles: make([]float64, 21)}, "analytics: 21 doubles, at most 20 allowed"},
	}
	for _, b := range bad {
		err := Validate(b.p)
		if err == nil || err.Error() != b.want {
			t.Errorf("Validate: %v, want %q", err, b.want)
		}
		if !errors.Is(err, ErrLimit) {
			t.Errorf("%v does not match ErrLimit", err)
		}
	}
}

func TestRecorder(t *testing.T) {
	var r Recorder
	if r.Points("none") != nil || len(r.Datasets()) != 0 {
		t.Fatal("zero Recorder not empty")
	}
	blob := []byte("GET")
	p := abi.DataPoint{Indexes: []string{"user-1"}, Blobs: [][]byte{blob, nil}, Doubles: []float64{1, 2.5}}
	if err := r.Write("requests", p); err != nil {
		t.Fatal(err)
	}
	blob[0] = 'P' // the caller reuses its buffer
	if err := r.Write("requests", abi.DataPoint{Doubles: []float64{3}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Write("events", abi.DataPoint{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Write("events", abi.DataPoint{Doubles: make([]float64, 21)}); !errors.Is(err, ErrLimit) {
		t.Errorf("over-limit point: %v", err)
	}
	if err := r.Write("", abi.DataPoint{}); !errors.Is(err, ErrInvalidDataset) {
		t.Errorf("empty dataset: %v", err)
	}

	got := r.Points("requests")
	want := []abi.DataPoint{
		{Indexes: []string{"user-1"}, Blobs: [][]byte{[]byte("GET"), nil}, Doubles: []float64{1, 2.5}},
		{Doubles: []float64{3}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Points = %#v, want %#v", got, want)
	}
	got[0].Blobs[0][0] = 'X' // a returned copy is the caller's
	got[0].Doubles[0] = 99
	if again := r.Points("requests"); !reflect.DeepEqual(again, want) {
		t.Errorf("Points changed through a returned copy: %#v", again)
	}
	if ds := r.Datasets(); !reflect.DeepEqual(ds, []string{"events", "requests"}) {
		t.Errorf("Datasets = %v", ds)
	}
	if len(r.Points("events")) != 1 {
		t.Errorf("events: %v", r.Points("events"))
	}
	r.Reset()
	if r.Points("requests") != nil || len(r.Datasets()) != 0 {
		t.Error("Reset kept points")
	}
}

func TestRecorderConcurrent(t *testing.T) {
	var r Recorder
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for i := 0; i < 100; i++ {
				if err := r.Write("d", abi.DataPoint{Doubles: []float64{float64(i)}}); err != nil {
					t.Error(err)
				}
				_ = r.Points("d")
			}
		})
	}
	wg.Wait()
	if n := len(r.Points("d")); n != 800 {
		t.Errorf("%d points, want 800", n)
	}
}
