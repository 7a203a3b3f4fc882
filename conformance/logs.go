package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/edgeshard/edgeshard/internal/harness"
)

// logRecorder reads the host's JSON log of one scenario.
type logRecorder struct{ *harness.LogBuffer }

// logRecord is one decoded log line.
type logRecord struct {
	raw    string
	fields map[string]any
}

func (r logRecorder) records() []logRecord {
	lines := r.Lines()
	out := make([]logRecord, 0, len(lines))
	for _, l := range lines {
		v, err := decodeJSON([]byte(l))
		m, ok := v.(map[string]any)
		if err != nil || !ok {
			m = map[string]any{"message": l}
		}
		out = append(out, logRecord{raw: l, fields: m})
	}
	return out
}

// field returns a record's field as a string ("" if absent).
func (rec logRecord) field(name string) (string, bool) {
	v, ok := rec.fields[name]
	if !ok {
		return "", false
	}
	if s, ok := scalarString(v); ok {
		return s, true
	}
	return show(v), true
}

// matches reports whether rec meets every criterion of e.
func (e *ExpectLog) matches(rec logRecord) bool {
	if e.Code != "" {
		if v, _ := rec.field("code"); v != e.Code {
			return false
		}
	}
	if e.Message != "" {
		if v, _ := rec.field("message"); !strings.Contains(v, e.Message) {
			return false
		}
	}
	if e.Level != "" {
		if v, _ := rec.field("level"); !strings.EqualFold(v, e.Level) {
			return false
		}
	}
	for k, want := range e.Fields {
		ws, _ := scalarString(want)
		if v, ok := rec.field(k); !ok || v != ws {
			return false
		}
	}
	return true
}

// nearMiss reports whether rec matches the record's identity (code, else
// message) but not every criterion: such records help explain a failure.
func (e *ExpectLog) nearMiss(rec logRecord) bool {
	switch {
	case e.Code != "":
		v, _ := rec.field("code")
		return v == e.Code
	case e.Message != "":
		v, _ := rec.field("message")
		return strings.Contains(v, e.Message)
	}
	return false
}

// String describes the criteria, e.g. `code=E-VIBECODR-2140 count=3`.
func (e *ExpectLog) String() string {
	var parts []string
	if e.Code != "" {
		parts = append(parts, "code="+e.Code)
	}
	if e.Message != "" {
		parts = append(parts, fmt.Sprintf("message contains %q", e.Message))
	}
	if e.Level != "" {
		parts = append(parts, "level="+e.Level)
	}
	keys := slices.Sorted(maps.Keys(e.Fields))
	for _, k := range keys {
		v, _ := scalarString(e.Fields[k])
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	return strings.Join(parts, " ")
}

// problems returns the last n warning and error records, compacted.
func problems(recs []logRecord, n int) []string {
	var out []string
	for i := len(recs) - 1; i >= 0 && len(out) < n; i-- {
		lvl, _ := recs[i].field("level")
		if lvl == "warn" || lvl == "error" || lvl == "fatal" || lvl == "panic" {
			out = append(out, truncate(recs[i].raw, 600))
		}
	}
	slices.Reverse(out)
	return out
}

// encodeJSON marshals v without escaping HTML characters.
func encodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
