package harness

import (
	"encoding/json"
	"strings"

	"github.com/edgeshard/edgeshard/internal/logbuf"
)

// LogBuffer captures a log from concurrent writers (a logbuf.Buffer) and
// reads its zerolog records: the log sink of the repository's tests and
// conformance scenarios.
type LogBuffer struct{ logbuf.Buffer }

// Lines returns the non-blank lines written so far (a zerolog record
// each).
func (l *LogBuffer) Lines() []string {
	var out []string
	for _, s := range strings.Split(l.String(), "\n") {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out
}

// Count returns how many times the field "code":"<code>" was logged.
func (l *LogBuffer) Count(code string) int {
	return strings.Count(l.String(), `"code":"`+code+`"`)
}

// WithCode returns the records whose "code" field is code, decoded (a
// repeated field keeps its last value, as encoding/json does).
func (l *LogBuffer) WithCode(code string) []map[string]any {
	return l.Records(func(m map[string]any) bool { return m["code"] == code })
}

// Records returns the records, decoded, for which match is true.
func (l *LogBuffer) Records(match func(map[string]any) bool) []map[string]any {
	var out []map[string]any
	for _, s := range l.Lines() {
		var m map[string]any
		if json.Unmarshal([]byte(s), &m) == nil && match(m) {
			out = append(out, m)
		}
	}
	return out
}
