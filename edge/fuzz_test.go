package edge

import (
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/plugins/proto/events"
)

// FuzzParseEvents: any body either is refused with a 4xx input error or
// yields events whose /enqueue lines RUNTIME_EVENT_SHARD's parser
// (events.ParseLine) accepts and reads back as the same event, with a
// UUID id.
func FuzzParseEvents(f *testing.F) {
	for _, s := range []string{
		`{"type":"t"}`, `{"events":[{"type":"a","capsule_id":"c","payload":{"x":[1,"\t\n"]}}]}`,
		`[{"type":"b","ts":"2026-01-01T00:00:00Z"}]`, `{"type":"t","ts":1e300}`, `{"type":"\u0000"}`,
		`{"events":[{"type":"t","id":"0b6f7c8e-5d3a-4e7b-9a51-2f0c1d9e8a7b"}]}`, `{"type":"t","payload":"` + "\xff" + `"}`,
		`{"type":"t","run_id":""}`, `{"type":"t","capsule_id":"../.."}`, `{"type":"t","run_id":"r\u202e1"}`,
	} {
		f.Add([]byte(s))
	}
	a := &API{cfg: DefaultConfig().withDefaults()}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, ie := a.parseEvents(body, now)
		if ie != nil {
			if ie.status < 400 || ie.status > 499 || ie.code == "" {
				t.Fatalf("input error %+v", ie)
			}
			return
		}
		for _, ev := range evs {
			line := string(ev.AppendLine(nil))
			if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
				t.Fatalf("bad line %q", line)
			}
			back, le := events.ParseLine(strings.TrimSuffix(line, "\n"))
			if le != nil {
				t.Fatalf("line %q refused by the shard's parser: %v", line, le)
			}
			if back != ev {
				t.Fatalf("line %q reads back as %+v, want %+v", line, back, ev)
			}
			if len(ev.ID) != 36 {
				t.Fatalf("bad event id %+v", ev)
			}
		}
	})
}
