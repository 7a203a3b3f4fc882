package sdk

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk/internal/guestmem"
)

// DataPoint is one analytics data point: at most 1 index (≤ 96 bytes), 20
// blobs (≤ 16 KiB together) and 20 doubles.
type DataPoint = abi.DataPoint

// AnalyticsDataset is the analytics binding granted to the namespace.
type AnalyticsDataset struct{}

// Analytics returns the analytics binding.
func Analytics() AnalyticsDataset { return AnalyticsDataset{} }

// WriteDataPoint records a data point. Like Workers Analytics Engine it is
// fire-and-forget: an error means the point was rejected (limits, or the
// sink is full), never that it is pending.
func (AnalyticsDataset) WriteDataPoint(p DataPoint) error {
	st.enc = abi.AppendDataPoint(st.enc[:0], &p)
	return errnoErr("analytics.write", hostAnalyticsWrite(guestmem.Bytes(st.enc), uint32(len(st.enc))))
}
