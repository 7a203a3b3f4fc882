package edge

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseEvents: any body either is refused with a 4xx input error or
// yields events whose /enqueue lines have exactly 7 tab-separated fields,
// no stray newline, and a UUID id.
func FuzzParseEvents(f *testing.F) {
	for _, s := range []string{
		`{"type":"t"}`, `{"events":[{"type":"a","capsule_id":"c","payload":{"x":[1,"\t\n"]}}]}`,
		`[{"type":"b","ts":"2026-01-01T00:00:00Z"}]`, `{"type":"t","ts":1e300}`, `{"type":"\u0000"}`,
		`{"events":[{"type":"t","id":"0b6f7c8e-5d3a-4e7b-9a51-2f0c1d9e8a7b"}]}`, `{"type":"t","payload":"` + "\xff" + `"}`,
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
			var b bytes.Buffer
			ev.appendLine(&b)
			line := b.String()
			if strings.Count(line, "\n") != 1 || strings.Count(line, "\t") != 6 || !utf8.ValidString(ev.Type) {
				t.Fatalf("bad line %q", line)
			}
			if len(ev.ID) != 36 || ev.Type == "" {
				t.Fatalf("bad event %+v", ev)
			}
		}
	})
}
