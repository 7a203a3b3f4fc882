package wasm

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Analytics host functions (group "analytics", granted when the binding
// names a dataset): data points written fire-and-forget, through
// Env.WriteDataPoint.

// analyticsFuncs are the host functions of group "analytics".
var analyticsFuncs = []hostFunc{analyticsWrite}

// maxDataPointBytes is the largest encoding of a data point within the
// analytics limits; anything longer breaks one of them.
const maxDataPointBytes = 4 + abi.MaxAnalyticsIdx*(4+abi.MaxAnalyticsIdxB) +
	4 + abi.MaxAnalyticsBlob*4 + abi.MaxAnalyticsBlobTotal +
	4 + abi.MaxAnalyticsDbl*8

// analyticsWrite is analytics_write(point_ptr, point_len) -> i32: records
// one data point.
//
// Parameters:
//   - point_ptr, point_len: an encoded abi.DataPoint (indexes, blobs,
//     doubles), within the analytics limits.
//
// Result: 0, the point accepted for writing. Errnos: ErrnoAnalytics when
// the dataset rejected it; ErrnoFault; ErrnoTooLarge for an encoding
// longer than any point within the limits (maxDataPointBytes); ErrnoInvalid
// for a malformed point.
var analyticsWrite = hostFunc{abi.FnAnalyticsWrite, analyticsWriteFn, p(i32, i32), p(i32)}

func analyticsWriteFn(c *call, mod api.Module, s []uint64) {
	dp, ok := decodeArg(c, mod, s, 0, maxDataPointBytes, "data point", abi.DecodeDataPoint)
	if !ok {
		return
	}
	if err := c.env.WriteDataPoint(dp); err != nil {
		s[0] = neg(c.groupErrno(err, abi.ErrnoAnalytics))
		return
	}
	s[0] = 0
}
