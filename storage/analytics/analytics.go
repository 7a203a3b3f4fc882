// Package analytics is the analytics binding ("Analytics Engine") of
// edgeshard: data points in the Workers Analytics Engine shape (one index,
// up to 20 blobs and 20 doubles), validated against the AE limits, written
// fire-and-forget to a Sink and queryable with SQL afterwards.
package analytics

import (
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
)

// ErrLimit is matched (errors.Is) by Validate's errors: the data point is
// over an Analytics Engine limit. The host answers with abi.ErrnoAnalytics.
var ErrLimit = errors.New("analytics: data point over a limit")

// ErrInvalidDataset is matched by Write's error for an empty or too long
// dataset name.
var ErrInvalidDataset = errors.New("analytics: invalid dataset name")

// ErrBufferFull is returned by SQLiteSink.Write when MaxBuffered points are
// waiting to be written: the point is dropped rather than the caller
// blocked.
var ErrBufferFull = errors.New("analytics: buffer full")

// ErrClosed is returned by SQLiteSink.Write after Close.
var ErrClosed = errors.New("analytics: sink closed")

// MaxDatasetName is the longest dataset name Write accepts, in bytes.
const MaxDatasetName = 256

// Sink receives data points. Write must not block on I/O: like Analytics
// Engine's writeDataPoint it is fire-and-forget, and a point it accepted is
// written later. Write does not keep p's slices; callers may reuse them.
type Sink interface {
	Write(dataset string, p abi.DataPoint) error
}

// limitError is a Validate error: a fixed message matching ErrLimit.
type limitError string

func (e limitError) Error() string        { return string(e) }
func (e limitError) Is(target error) bool { return target == ErrLimit }

func limitErr(format string, a ...any) error { return limitError(fmt.Sprintf(format, a...)) }

// Validate checks p against the Analytics Engine limits: at most
// abi.MaxAnalyticsIdx index of at most abi.MaxAnalyticsIdxB bytes, at most
// abi.MaxAnalyticsBlob blobs totalling at most abi.MaxAnalyticsBlobTotal
// bytes, and at most abi.MaxAnalyticsDbl doubles. Its errors match ErrLimit
// and say which limit, e.g. "analytics: 3 indexes, at most 1 allowed".
func Validate(p abi.DataPoint) error {
	if n := len(p.Indexes); n > abi.MaxAnalyticsIdx {
		return limitErr("analytics: %d indexes, at most %d allowed", n, abi.MaxAnalyticsIdx)
	}
	for _, idx := range p.Indexes {
		if len(idx) > abi.MaxAnalyticsIdxB {
			return limitErr("analytics: index is %d bytes, at most %d allowed", len(idx), abi.MaxAnalyticsIdxB)
		}
	}
	if n := len(p.Blobs); n > abi.MaxAnalyticsBlob {
		return limitErr("analytics: %d blobs, at most %d allowed", n, abi.MaxAnalyticsBlob)
	}
	total := 0
	for _, b := range p.Blobs {
		total += len(b)
	}
	if total > abi.MaxAnalyticsBlobTotal {
		return limitErr("analytics: blobs total %d bytes, at most %d allowed", total, abi.MaxAnalyticsBlobTotal)
	}
	if n := len(p.Doubles); n > abi.MaxAnalyticsDbl {
		return limitErr("analytics: %d doubles, at most %d allowed", n, abi.MaxAnalyticsDbl)
	}
	return nil
}

// validateWrite checks what every Sink.Write checks.
func validateWrite(dataset string, p abi.DataPoint) error {
	switch {
	case dataset == "":
		return fmt.Errorf("%w: empty", ErrInvalidDataset)
	case len(dataset) > MaxDatasetName:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidDataset, len(dataset), MaxDatasetName)
	}
	return Validate(p)
}

// clonePoint returns a deep copy of p, so the caller may reuse its slices.
func clonePoint(p abi.DataPoint) abi.DataPoint {
	var c abi.DataPoint
	if p.Indexes != nil {
		c.Indexes = append([]string{}, p.Indexes...)
	}
	if p.Blobs != nil {
		total := 0
		for _, b := range p.Blobs {
			total += len(b)
		}
		buf := make([]byte, 0, total) // one allocation for all blobs
		c.Blobs = make([][]byte, len(p.Blobs))
		for i, b := range p.Blobs {
			if b == nil {
				continue
			}
			start := len(buf)
			buf = append(buf, b...)
			c.Blobs[i] = buf[start:len(buf):len(buf)]
		}
	}
	if p.Doubles != nil {
		c.Doubles = append([]float64{}, p.Doubles...)
	}
	return c
}
