package eventsbody

import (
	"encoding/json"
	"fmt"
	"testing"
)

// TestAppendIsTheEnvelope: n events in order, comma-separated, inside
// {"events":[…]}; none gives an empty list.
func TestAppendIsTheEnvelope(t *testing.T) {
	ev := func(b []byte, i int) []byte { return fmt.Appendf(b, `{"type":"t","payload":{"i":%d}}`, i) }
	if got := string(Append(nil, 0, ev)); got != `{"events":[]}` {
		t.Fatalf("no events: %s", got)
	}
	b := Append([]byte("x"), 3, ev)
	if b[0] != 'x' {
		t.Fatalf("did not append: %s", b)
	}
	var body struct {
		Events []struct {
			Type    string
			Payload struct{ I int }
		}
	}
	if err := json.Unmarshal(b[1:], &body); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if len(body.Events) != 3 {
		t.Fatalf("%s: %d events", b, len(body.Events))
	}
	for i, e := range body.Events {
		if e.Type != "t" || e.Payload.I != i {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
}
