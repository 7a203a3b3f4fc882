package wasm

import (
	"bytes"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// Tests of the analytics host function, analytics_write.

// TestAnalyticsHostileArguments: analytics_write answers every argument,
// bad ones included, with 0 or an errno.
func TestAnalyticsHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	validPoint := abi.AppendDataPoint(nil, &abi.DataPoint{Doubles: []float64{1}})
	runSteps(t, d, []step{
		{"analytics past memory", nil, "analytics_write", []uint64{oob, 4}, eFault, ""},
		{"analytics over the limits", nil, "analytics_write", []uint64{offBig, maxDataPointBytes + 1}, eTooLarge, ""},
		{"analytics malformed", le32(5), "analytics_write", []uint64{offData, 4}, eInvalid, ""},
		{"analytics", validPoint, "analytics_write", []uint64{offData, uint64(len(validPoint))}, 0, ""},
		{"analytics with a failed message set", le32(5), "analytics_write", []uint64{offData, 4}, eInvalid, ""},
	})
	if d.env.points != 1 {
		t.Fatalf("%d points written, want 1", d.env.points)
	}
}

// TestAnalyticsPoint: the point reaches the Env decoded; one at every
// limit fits maxDataPointBytes.
func TestAnalyticsPoint(t *testing.T) {
	d := newHostileDriver(t)
	p := abi.DataPoint{Indexes: []string{"i"}, Blobs: [][]byte{{1}, {}}, Doubles: []float64{2, 3}}
	enc := abi.AppendDataPoint(nil, &p)
	runSteps(t, d, []step{{"write", enc, "analytics_write", []uint64{offData, uint64(len(enc))}, 0, ""}})
	if got := abi.AppendDataPoint(nil, &d.env.lastPoint); !bytes.Equal(got, enc) {
		t.Fatalf("the Env got %+v, want %+v", d.env.lastPoint, p)
	}
	full := abi.DataPoint{Indexes: make([]string, abi.MaxAnalyticsIdx), Doubles: make([]float64, abi.MaxAnalyticsDbl)}
	for i := range full.Indexes {
		full.Indexes[i] = string(make([]byte, abi.MaxAnalyticsIdxB))
	}
	for i := 0; i < abi.MaxAnalyticsBlob; i++ {
		full.Blobs = append(full.Blobs, make([]byte, abi.MaxAnalyticsBlobTotal/abi.MaxAnalyticsBlob))
	}
	if n := len(abi.AppendDataPoint(nil, &full)); n > maxDataPointBytes {
		t.Fatalf("a point at every limit encodes to %d bytes, over maxDataPointBytes %d", n, maxDataPointBytes)
	}
}

// TestAnalyticsEnvErrors: a failure of the Env answers the errno
// call.errno maps it to, ErrnoAnalytics for what would be ErrnoIO; an
// injected crash traps.
func TestAnalyticsEnvErrors(t *testing.T) {
	d := newHostileDriver(t)
	enc := abi.AppendDataPoint(nil, &abi.DataPoint{Doubles: []float64{1}})
	d.write(t, offData, enc)
	checkEnvErrors(t, d, abi.ErrnoAnalytics, "analytics_write", offData, uint64(len(enc)))
}

// TestAnalyticsDoesNotAmplify: a 16 MiB point of empty blobs is refused
// before it is decoded.
func TestAnalyticsDoesNotAmplify(t *testing.T) {
	emptyBlobs := append(append(le32(0), le32(4<<20-2)...), make([]byte, 16<<20-8)...)
	checkNoAmplify(t, []amplifyCase{
		{"data point of 4M empty blobs", emptyBlobs, abi.FnAnalyticsWrite, []uint64{amplifyAt, amplifyBig}, eTooLarge},
	})
}
