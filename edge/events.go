package edge

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/plugins/proto"
	"github.com/edgeshard/edgeshard/plugins/proto/events"

	"github.com/google/uuid"
)

// event is a validated, normalised runtime event: the /enqueue line of
// RUNTIME_EVENT_SHARD and a runtime_events row (proto/events).
type event = events.Event

// inputError is a client error: status, code and a message naming the
// offending input.
type inputError struct {
	status int
	code   string
	msg    string
}

func (e *inputError) Error() string { return e.msg }

func badInput(code, format string, args ...any) *inputError {
	return &inputError{status: http.StatusBadRequest, code: code, msg: fmt.Sprintf(format, args...)}
}

// readBody reads a request body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *inputError) {
	if r.ContentLength > limit {
		return nil, &inputError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", limit)}
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &inputError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", limit)}
		}
		return nil, badInput("bad_body", "could not read the request body: %v", err)
	}
	return b, nil
}

// eventIn is the JSON shape of one event.
type eventIn struct {
	ID        *string         `json:"id"`
	Type      *string         `json:"type"`
	TS        json.RawMessage `json:"ts"`
	CapsuleID *string         `json:"capsule_id"`
	RunID     *string         `json:"run_id"`
	Payload   json.RawMessage `json:"payload"`
}

// parseEvents decodes one event or {"events":[...]} (or a bare array) and
// validates and normalises every event.
func (a *API) parseEvents(body []byte, now time.Time) ([]event, *inputError) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, badInput("bad_json", "empty body: want an event object or {\"events\":[...]}")
	}
	if d := jsonDepth(trimmed); d > maxJSONDepth {
		return nil, badInput("bad_json", "body nests arrays and objects %d deep, at most %d", d, maxJSONDepth)
	}
	if !json.Valid(trimmed) {
		return nil, badInput("bad_json", "body is not valid JSON")
	}
	var raws []json.RawMessage
	where := func(i int) string { return "event" }
	switch trimmed[0] {
	case '[':
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, badInput("bad_json", "body: %v", err)
		}
		where = func(i int) string { return "events[" + strconv.Itoa(i) + "]" }
	case '{':
		var top map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &top); err != nil {
			return nil, badInput("bad_json", "body: %v", err)
		}
		if evs, ok := top["events"]; ok {
			if len(top) != 1 {
				return nil, badInput("bad_json", "a batch is {\"events\":[...]} with no other fields")
			}
			if err := json.Unmarshal(evs, &raws); err != nil || raws == nil {
				return nil, badInput("bad_json", "events: want an array of event objects")
			}
			where = func(i int) string { return "events[" + strconv.Itoa(i) + "]" }
		} else {
			raws = []json.RawMessage{trimmed}
		}
	default:
		return nil, badInput("bad_json", "want an event object or {\"events\":[...]}")
	}
	if len(raws) == 0 {
		return nil, badInput("no_events", "the batch has no events")
	}
	if len(raws) > a.cfg.Events.MaxEvents {
		return nil, &inputError{http.StatusRequestEntityTooLarge, "too_many_events",
			fmt.Sprintf("%d events in one request, at most %d", len(raws), a.cfg.Events.MaxEvents)}
	}
	out := make([]event, 0, len(raws))
	seen := make(map[string]int, len(raws))
	for i, raw := range raws {
		ev, ie := a.parseEvent(raw, now)
		if ie != nil {
			ie.msg = where(i) + ": " + ie.msg
			return nil, ie
		}
		if _, dup := seen[ev.ID]; dup {
			continue // the same event sent twice (a retry within the batch): accepted once
		}
		seen[ev.ID] = i
		out = append(out, ev)
	}
	return out, nil
}

// maxJSONDepth bounds how deep a request body may nest arrays and objects
// (an event's payload included).
const maxJSONDepth = 64

// jsonDepth returns how deep b nests arrays and objects, outside strings;
// it stops counting past maxJSONDepth+1.
func jsonDepth(b []byte) int {
	depth, most, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth > most {
				if most = depth; most > maxJSONDepth {
					return most
				}
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return most
}

// parseEvent validates one event and normalises it: a UUID (the client's
// own id if it sent a valid one, so a retried request is deduplicated),
// ts in unix ms (now when absent), compact JSON payload.
func (a *API) parseEvent(raw json.RawMessage, now time.Time) (event, *inputError) {
	var in eventIn
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return event{}, badInput("invalid_event", "%s: want a %s, got a JSON %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		case errors.As(err, &te):
			return event{}, badInput("invalid_event", "want an event object, got a JSON %s", te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return event{}, badInput("invalid_event", "%s (fields are id, type, ts, capsule_id, run_id, payload)", strings.TrimPrefix(err.Error(), "json: "))
		}
		return event{}, badInput("invalid_event", "%v", err)
	}
	ev := event{ReceivedMs: now.UnixMilli()}
	if in.Type == nil {
		return event{}, badInput("invalid_event", "type is required")
	}
	if why := events.CheckType(*in.Type); why != "" {
		return event{}, badInput("invalid_event", "type %s", why)
	}
	ev.Type = *in.Type
	// An absent (or null) capsule_id or run_id is stored as NULL; one that
	// is present, even "", must be an id.
	if in.CapsuleID != nil {
		if !proto.ValidID(*in.CapsuleID) {
			return event{}, badInput("invalid_event", "capsule_id: want %s (omit it when there is none)", proto.IDRule)
		}
		ev.CapsuleID = *in.CapsuleID
	}
	if in.RunID != nil {
		if !proto.ValidID(*in.RunID) {
			return event{}, badInput("invalid_event", "run_id: want %s (omit it when there is none)", proto.IDRule)
		}
		ev.RunID = *in.RunID
	}
	ts, ie := parseTS(in.TS, now)
	if ie != nil {
		return event{}, ie
	}
	ev.TsMs = ts
	if p := bytes.TrimSpace(in.Payload); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, p); err != nil {
			return event{}, badInput("invalid_event", "payload: %v", err)
		}
		if buf.Len() > a.cfg.Events.MaxPayloadBytes {
			return event{}, &inputError{http.StatusRequestEntityTooLarge, "payload_too_large",
				fmt.Sprintf("payload: %d bytes of compact JSON, at most %d", buf.Len(), a.cfg.Events.MaxPayloadBytes)}
		}
		ev.Payload = buf.String()
	}
	if in.ID != nil && *in.ID != "" {
		id, err := uuid.Parse(*in.ID)
		if err != nil || len(*in.ID) != 36 {
			return event{}, badInput("invalid_event", "id: want a UUID like 0b6f7c8e-5d3a-4e7b-9a51-2f0c1d9e8a7b")
		}
		ev.ID = id.String()
	} else {
		id, err := uuid.NewRandom()
		if err != nil {
			return event{}, &inputError{http.StatusInternalServerError, "internal", "could not generate an event id"}
		}
		ev.ID = id.String()
	}
	return ev, nil
}

func jsonKind(k string) string {
	switch k {
	case "ptr":
		return "string"
	case "int64", "float64":
		return "number"
	}
	return k
}

// parseTS reads ts: unix milliseconds (a JSON number) or an RFC 3339
// string; absent or null is now.
func parseTS(raw json.RawMessage, now time.Time) (int64, *inputError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return now.UnixMilli(), nil
	}
	var ms int64
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, badInput("invalid_event", "ts: %v", err)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, badInput("invalid_event", "ts: want unix milliseconds or an RFC 3339 time, got %q", s)
		}
		ms = t.UnixMilli()
	} else {
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, badInput("invalid_event", "ts: want unix milliseconds or an RFC 3339 time")
		}
		if f < 0 || f > events.MaxTSMillis {
			return 0, badInput("invalid_event", "ts: %s is out of range (unix milliseconds)", raw)
		}
		if f != math.Trunc(f) {
			return 0, badInput("invalid_event", "ts: want whole unix milliseconds, got %s", raw)
		}
		ms = int64(f)
	}
	if !events.ValidTS(ms) {
		return 0, badInput("invalid_event", "ts: out of range")
	}
	return ms, nil
}

// eventsReply is the 202 answer of POST /runtime-events.
type eventsReply struct {
	Accepted int      `json:"accepted"`
	IDs      []string `json:"ids"`
}

// eventsFailure is the 503 answer: which events are durable anyway (a retry
// that resends them with these ids is deduplicated) and which are not.
type eventsFailure struct {
	Error     httpx.ErrorDetail `json:"error"`
	Accepted  int               `json:"accepted"`
	IDs       []string          `json:"ids"`
	FailedIDs []string          `json:"failed_ids"`
}

// serveRuntimeEvents is POST /runtime-events.
func (a *API) serveRuntimeEvents(w http.ResponseWriter, r *http.Request) {
	body, ie := readBody(w, r, a.cfg.Events.MaxBodyBytes)
	if ie != nil {
		writeError(w, ie.status, ie.code, ie.msg)
		return
	}
	evs, ie := a.parseEvents(body, a.now())
	if ie != nil {
		writeError(w, ie.status, ie.code, ie.msg)
		return
	}
	durable, err := a.ingest(r.Context(), evs)
	if err != nil {
		f := eventsFailure{Error: httpx.ErrorDetail{Code: "events_unavailable", Message: err.Error()}, IDs: []string{}, FailedIDs: []string{}}
		for i, ev := range evs {
			if durable[i] {
				f.IDs = append(f.IDs, ev.ID)
			} else {
				f.FailedIDs = append(f.FailedIDs, ev.ID)
			}
		}
		f.Accepted = len(f.IDs)
		w.Header().Set("Retry-After", "1")
		httpx.WriteJSON(w, http.StatusServiceUnavailable, f)
		return
	}
	rep := eventsReply{Accepted: len(evs), IDs: make([]string, len(evs))}
	for i, ev := range evs {
		rep.IDs[i] = ev.ID
	}
	httpx.WriteJSON(w, http.StatusAccepted, rep)
}

// ingest makes every event durable according to RUNTIME_EVENT_DO_MODE and
// reports which are; an error means at least one is not (and was logged
// with E-VIBECODR-2138).
func (a *API) ingest(ctx context.Context, evs []event) ([]bool, error) {
	ctx = context.WithoutCancel(ctx) // a vanished client must not leave half a batch
	durable := make([]bool, len(evs))
	mark := func(idx []int) {
		for _, i := range idx {
			durable[i] = true
		}
	}
	all := make([]int, len(evs))
	for i := range all {
		all[i] = i
	}
	mode := a.cfg.EventMode
	if mode == ModeOff {
		if err := a.insertEvents(ctx, evs, all); err != nil {
			return durable, a.eventsLost(len(evs), "off", err)
		}
		a.m.events.WithLabelValues("sql").Add(float64(len(evs)))
		mark(all)
		return durable, nil
	}

	groups, order := a.groupEvents(evs)
	shardErr := make([]error, len(order))
	var inlineErr error
	var wg sync.WaitGroup
	for gi, s := range order {
		wg.Go(func() {
			shardErr[gi] = a.enqueueEvents(ctx, s, evs, groups[s])
		})
	}
	if mode == ModeShadow {
		wg.Go(func() {
			inlineErr = a.insertEvents(ctx, evs, all)
		})
	}
	wg.Wait()

	var failed []int
	for gi, s := range order {
		if err := shardErr[gi]; err != nil {
			a.m.fallback("runtime_events", CodeEventEnqueueFailed)
			a.log.Warn().Str("code", CodeEventEnqueueFailed).Int("shard", s).Int("count", len(groups[s])).
				Str("mode", string(mode)).Err(err).Msg("runtime-event shard enqueue failed; writing the events inline")
			failed = append(failed, groups[s]...)
		} else {
			mark(groups[s])
		}
	}
	switch mode {
	case ModeShadow:
		if inlineErr == nil {
			mark(all)
			a.m.events.WithLabelValues("both").Add(float64(len(evs) - len(failed)))
			a.m.events.WithLabelValues("sql").Add(float64(len(failed)))
			return durable, nil
		}
		if len(failed) > 0 {
			return durable, a.eventsLost(len(failed), "shadow", inlineErr)
		}
		a.log.Warn().Str("mode", "shadow").Int("count", len(evs)).Err(inlineErr).
			Msg("shadow inline insert of runtime events failed; the events are durable in their shards")
		a.m.events.WithLabelValues("shard").Add(float64(len(evs)))
		return durable, nil
	default: // primary
		a.m.events.WithLabelValues("shard").Add(float64(len(evs) - len(failed)))
		if len(failed) == 0 {
			return durable, nil
		}
		if err := a.insertEvents(ctx, evs, failed); err != nil {
			return durable, a.eventsLost(len(failed), "primary", err)
		}
		a.m.events.WithLabelValues("sql").Add(float64(len(failed)))
		mark(failed)
		return durable, nil
	}
}

// eventsLost logs E-VIBECODR-2138 and returns the client-facing error.
func (a *API) eventsLost(n int, mode string, err error) error {
	a.m.fallback("runtime_events", CodeEventFallbackFailed)
	a.log.Error().Str("code", CodeEventFallbackFailed).Int("count", n).Str("mode", mode).Err(err).
		Msg("runtime events could not be made durable: shard and inline SQL insert both failed")
	return fmt.Errorf("%d event(s) could not be stored; retry with the same ids", n)
}

// groupEvents groups event indices by the shard their routing key maps to.
func (a *API) groupEvents(evs []event) (map[int][]int, []int) {
	n := a.events.Shards()
	groups := map[int][]int{}
	var order []int
	for i := range evs {
		s := shardOf(evs[i].RoutingKey(), n)
		if _, ok := groups[s]; !ok {
			order = append(order, s)
		}
		groups[s] = append(groups[s], i)
	}
	return groups, order
}

// enqueueReply is RUNTIME_EVENT_SHARD's /enqueue answer.
type enqueueReply struct {
	Accepted *int `json:"accepted"`
}

// enqueueEvents sends events idx to one shard: POST /enqueue, at most
// events.MaxPerCall a call.
func (a *API) enqueueEvents(ctx context.Context, shard int, evs []event, idx []int) error {
	for len(idx) > events.MaxPerCall {
		if err := a.enqueueEvents(ctx, shard, evs, idx[:events.MaxPerCall]); err != nil {
			return err
		}
		idx = idx[events.MaxPerCall:]
	}
	var b []byte
	for _, i := range idx {
		b = evs[i].AppendLine(b)
	}
	resp, err := a.callShard(ctx, a.events, shard, http.MethodPost, "/enqueue", b)
	if err != nil {
		return err
	}
	var rep enqueueReply
	if err := json.Unmarshal(resp.Body, &rep); err != nil {
		return fmt.Errorf("decode /enqueue answer: %w", err)
	}
	if rep.Accepted == nil {
		return fmt.Errorf("/enqueue answer lacks accepted: %s", resp.Body)
	}
	if *rep.Accepted != len(idx) {
		return fmt.Errorf("/enqueue accepted %d of %d events", *rep.Accepted, len(idx))
	}
	return nil
}

// insertEvents writes events idx to runtime_events in one transaction,
// ON CONFLICT(id) DO NOTHING (a shard flush may write the same ids).
func (a *API) insertEvents(ctx context.Context, evs []event, idx []int) error {
	err := a.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		args := make([]any, 0, events.RowsPerInsert*events.NumFields)
		for start := 0; start < len(idx); start += events.RowsPerInsert {
			chunk := idx[start:min(len(idx), start+events.RowsPerInsert)]
			args = args[:0]
			for _, i := range chunk {
				args = evs[i].AppendArgs(args)
			}
			if _, err := tx.ExecContext(ctx, events.InsertSQL(len(chunk)), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("insert runtime events: %w", err)
	}
	return nil
}
