package main

import (
	"strconv"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/plugins/internal/shardkit"
	"github.com/edgeshard/edgeshard/plugins/proto"
	"github.com/edgeshard/edgeshard/plugins/proto/events"
)

// ParseBody parses every line of an /enqueue body (events.ParseLine).
// Lines are returned as they came (without newline), ready to be stored.
func ParseBody(body string, maxEvents int) ([]string, *sdk.Response) {
	var out []string
	lines := proto.NewLines(body)
	for {
		s, no, ok := lines.Next()
		if !ok {
			break
		}
		if len(out) == maxEvents {
			return nil, shardkit.Refuse(&proto.LineError{Line: no, Code: "too_many_events", Msg: "at most " + strconv.Itoa(maxEvents) + " events per call"})
		}
		if _, le := events.ParseLine(s); le != nil {
			le.Line = no
			return nil, shardkit.Refuse(le)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, sdk.ErrorJSON(400, "empty_body", "no event lines in the body")
	}
	return out, nil
}

// dataPoint returns the event's analytics data point: index capsule_id (or
// run_id), blobs id, type, capsule_id, run_id, double ts_ms.
func dataPoint(ev *events.Event) sdk.DataPoint {
	p := sdk.DataPoint{
		Blobs:   [][]byte{[]byte(ev.ID), []byte(ev.Type), []byte(ev.CapsuleID), []byte(ev.RunID)},
		Doubles: []float64{float64(ev.TsMs)},
	}
	idx := ev.CapsuleID
	if idx == "" {
		idx = ev.RunID
	}
	if idx != "" {
		p.Indexes = []string{truncateUTF8(idx, abi.MaxAnalyticsIdxB)}
	}
	return p
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
