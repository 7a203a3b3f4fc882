package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Format is the suite format this package reads.
const Format = "edgeshard-conformance/v1"

// ErrInvalidSuite is matched (errors.Is) by every error of LoadSuite,
// ParseSuite and Suite.Validate: the suite file is malformed, has an
// unsupported format, or a step is invalid.
var ErrInvalidSuite = errors.New("invalid conformance suite")

// Suite is one conformance suite: a binding to load the plugin under and
// scenarios to run against it, each in a fresh world.
type Suite struct {
	Format      string            `json:"format"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Binding     Binding           `json:"binding"`
	Vars        map[string]string `json:"vars,omitempty"`
	Scenarios   []Scenario        `json:"scenarios"`
}

// Binding says how the plugin is bound: its namespace name, how it shards,
// and which bindings it is granted.
type Binding struct {
	// Name is the binding name (default "SHARD").
	Name string `json:"name,omitempty"`
	// Shards is the shard count of a sharded namespace; 0 (or absent)
	// gives one object per key.
	Shards int `json:"shards,omitempty"`
	// SQL grants the SQL binding (a migrated SQLite database).
	SQL bool `json:"sql,omitempty"`
	// ShardSQL grants the SQL binding as a database per shard (the host's
	// sql = "shard"): expect_sql then names the shard by key, and sql_fail
	// takes only "crash_after_commit" (the process dies between the
	// event's SQL commit and its storage commit) and "off".
	ShardSQL bool `json:"shard_sql,omitempty"`
	// Analytics grants the analytics binding (a recorder).
	Analytics bool `json:"analytics,omitempty"`
	// Dataset is the analytics dataset name (default: the binding name).
	Dataset string `json:"dataset,omitempty"`
}

// DefaultBindingName is the binding name of a suite that names none.
const DefaultBindingName = "SHARD"

func (b Binding) name() string {
	if b.Name == "" {
		return DefaultBindingName
	}
	return b.Name
}

func (b Binding) dataset() string {
	if b.Dataset == "" {
		return b.name()
	}
	return b.Dataset
}

// Scenario is a named sequence of steps run in a fresh world.
type Scenario struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Vars override the suite's vars for this scenario.
	Vars  map[string]string `json:"vars,omitempty"`
	Steps []Step            `json:"steps"`
}

// Step is one step of a scenario. Exactly one action field is set (Fetch,
// Repeat, Advance, FireAlarm, SQLFail, Restart or one of the Expect*
// fields); Expect goes with Fetch, Step with Repeat.
type Step struct {
	// Comment is free text for the reader; it is ignored.
	Comment string `json:"comment,omitempty"`

	Fetch  *Fetch  `json:"fetch,omitempty"`
	Expect *Expect `json:"expect,omitempty"`

	Repeat int   `json:"repeat,omitempty"`
	Step   *Step `json:"step,omitempty"`

	Advance   *Duration `json:"advance,omitempty"`
	FireAlarm *ShardRef `json:"fire_alarm,omitempty"`
	SQLFail   *SQLFail  `json:"sql_fail,omitempty"`
	Restart   *ShardRef `json:"restart,omitempty"`

	ExpectSQL       *ExpectSQL       `json:"expect_sql,omitempty"`
	ExpectStorage   *ExpectStorage   `json:"expect_storage,omitempty"`
	ExpectAlarm     *ExpectAlarm     `json:"expect_alarm,omitempty"`
	ExpectLog       *ExpectLog       `json:"expect_log,omitempty"`
	ExpectNoLog     *ExpectLog       `json:"expect_no_log,omitempty"`
	ExpectAnalytics *ExpectAnalytics `json:"expect_analytics,omitempty"`
}

// Fetch sends a request to the shard Key routes to.
type Fetch struct {
	// Key is the routing key (hashed for a sharded binding, the object
	// name otherwise).
	Key string `json:"key"`
	// Method defaults to GET, Path to "/". Path may carry a query.
	Method  string            `json:"method,omitempty"`
	Path    string            `json:"path,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// Body is sent as is; JSON (instead of Body) is any JSON value, sent
	// encoded with Content-Type application/json unless Headers set one.
	Body *string         `json:"body,omitempty"`
	JSON json.RawMessage `json:"json,omitempty"`
}

// Expect checks a fetch's outcome. A host-side failure of the fetch (trap,
// timeout, ...) is seen as the edge API answers it: the status and code of
// host.ErrorStatus and the body {"error":{"code":...,"message":...}}.
type Expect struct {
	// Status is an exact status (200) or a class ("5xx"). Without Status
	// and Error the fetch must answer 2xx.
	Status *Status `json:"status,omitempty"`
	// Error is the host error code the fetch must fail with, e.g.
	// "shard_crashed" (see host.ErrorStatus). A response from the plugin,
	// whatever its status, never matches Error.
	Error string `json:"error,omitempty"`
	// JSON: the body must be JSON containing these values (a recursive
	// subset match: objects may have more keys, arrays match element-wise,
	// numbers compare numerically).
	JSON json.RawMessage `json:"json,omitempty"`
	// Body is the exact body; BodyContains a substring of it.
	Body         *string `json:"body,omitempty"`
	BodyContains string  `json:"body_contains,omitempty"`
	// Headers: each response header (case-insensitive name) must have
	// exactly this value.
	Headers map[string]string `json:"headers,omitempty"`
}

// ShardRef names the shard a routing key routes to.
type ShardRef struct {
	Key string `json:"key"`
}

// SQL failure modes of SQLFail.
const (
	SQLFailError            = "error"
	SQLFailCrashAfterCommit = "crash_after_commit"
	SQLFailOff              = "off"
)

// SQLFail injects SQL failures into the plugin's SQL binding.
type SQLFail struct {
	// Mode is "error" (SQL calls fail with an error), "crash_after_commit"
	// (the batch commits, then the guest traps; with shard_sql: the event's
	// SQL commits, then the host dies before its storage commit) or "off".
	Mode string `json:"mode"`
	// Times limits how many SQL calls the mode affects before it turns
	// itself off: default unlimited for "error", 1 for
	// "crash_after_commit".
	Times int `json:"times,omitempty"`
}

// ExpectSQL runs a query on the SQL database and compares its rows.
type ExpectSQL struct {
	// Key, with shard_sql only, names the shard (by routing key) whose
	// database is queried.
	Key   string `json:"key,omitempty"`
	Query string `json:"query"`
	Args  []any  `json:"args,omitempty"`
	// Rows must equal the result, in order ([] for none). Numbers compare
	// numerically, strings exactly; null is SQL NULL.
	Rows [][]any `json:"rows"`
}

// ExpectStorage checks the storage of the shard Key routes to.
type ExpectStorage struct {
	Key string `json:"key"`
	// Prefix restricts Count and Keys to keys with this prefix.
	Prefix string `json:"prefix,omitempty"`
	// Count is the number of keys with Prefix.
	Count *int `json:"count,omitempty"`
	// Keys is the exact list of keys with Prefix, in key order.
	Keys []string `json:"keys,omitempty"`
	// Entries maps keys to their exact string values; null means absent.
	Entries map[string]*string `json:"entries,omitempty"`
}

// ExpectAlarm checks the alarm of the shard Key routes to: exactly one of
// In, At and None.
type ExpectAlarm struct {
	Key string `json:"key"`
	// In: the alarm is set for now + In (±1 ms).
	In *Duration `json:"in,omitempty"`
	// At: the alarm is set for this RFC 3339 time (±1 ms).
	At string `json:"at,omitempty"`
	// None: no alarm is set.
	None bool `json:"none,omitempty"`
}

// ExpectLog matches log records of the host (including what guests log):
// every given criterion must hold for a record to match.
type ExpectLog struct {
	// Code is the record's "code" field.
	Code string `json:"code,omitempty"`
	// Message is a substring of the record's message.
	Message string `json:"message,omitempty"`
	// Level is the record's level ("debug", "info", "warn", "error").
	Level string `json:"level,omitempty"`
	// Fields: each field's value, compared as a string (3 matches "3").
	Fields map[string]any `json:"fields,omitempty"`
	// Count, for expect_log only, is the exact number of matching records;
	// without it at least one must match.
	Count *int `json:"count,omitempty"`
}

// ExpectAnalytics checks the number of analytics data points written.
type ExpectAnalytics struct {
	Count *int `json:"count"`
	// Dataset restricts the count to one dataset; default all.
	Dataset string `json:"dataset,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("5s",
// "1m30s", "250ms").
type Duration time.Duration

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string like \"5s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a Go duration like \"5s\" or \"1m30s\"", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Status matches a response status: an exact code or a class.
type Status struct {
	Code  int // an exact status (200), or 0
	Class int // 1..5 for "1xx".."5xx", or 0
}

// UnmarshalJSON reads 200, "200" or "2xx".
func (s *Status) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil && len(b) > 0 && b[0] != '"' {
		c, err := strconv.Atoi(n.String())
		if err != nil || c < 100 || c > 599 {
			return fmt.Errorf("status %s: want 100..599 or a class like \"5xx\"", b)
		}
		*s = Status{Code: c}
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("status %s: want a number or a class like \"5xx\"", b)
	}
	if len(str) == 3 && str[0] >= '1' && str[0] <= '5' && strings.EqualFold(str[1:], "xx") {
		*s = Status{Class: int(str[0] - '0')}
		return nil
	}
	c, err := strconv.Atoi(str)
	if err != nil || c < 100 || c > 599 {
		return fmt.Errorf("status %q: want 100..599 or a class like \"5xx\"", str)
	}
	*s = Status{Code: c}
	return nil
}

// MarshalJSON writes a number or a class string.
func (s Status) MarshalJSON() ([]byte, error) {
	if s.Class != 0 {
		return json.Marshal(s.String())
	}
	return json.Marshal(s.Code)
}

// String returns "200" or "5xx".
func (s Status) String() string {
	if s.Class != 0 {
		return strconv.Itoa(s.Class) + "xx"
	}
	return strconv.Itoa(s.Code)
}

// Match reports whether status satisfies s.
func (s Status) Match(status int) bool {
	if s.Class != 0 {
		return status/100 == s.Class
	}
	return status == s.Code
}

// LoadSuite reads and parses a suite file.
func LoadSuite(path string) (*Suite, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load suite: %w", err)
	}
	s, err := ParseSuite(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseSuite parses a suite. It refuses other formats than Format,
// unknown keys anywhere (naming the scenario and step index) and invalid
// steps; errors match ErrInvalidSuite.
func ParseSuite(b []byte) (*Suite, error) {
	s, err := parseSuite(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSuite, err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

func parseSuite(b []byte) (*Suite, error) {
	var head struct {
		Format *string `json:"format"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, jsonError(b, err)
	}
	switch {
	case head.Format == nil:
		return nil, fmt.Errorf("missing \"format\": want %q", Format)
	case *head.Format != Format:
		return nil, fmt.Errorf("format %q is not supported: want %q", *head.Format, Format)
	}
	var raw struct {
		Format      string            `json:"format"`
		Name        string            `json:"name"`
		Description string            `json:"description"`
		Binding     json.RawMessage   `json:"binding"`
		Vars        map[string]string `json:"vars"`
		Scenarios   []json.RawMessage `json:"scenarios"`
	}
	if err := strictDecode(b, &raw); err != nil {
		return nil, fmt.Errorf("suite: %w", err)
	}
	s := &Suite{Format: raw.Format, Name: raw.Name, Description: raw.Description, Vars: raw.Vars}
	if len(raw.Binding) > 0 {
		if err := strictDecode(raw.Binding, &s.Binding); err != nil {
			return nil, fmt.Errorf("binding: %w", err)
		}
	}
	for i, rs := range raw.Scenarios {
		var sc struct {
			Name        string            `json:"name"`
			Description string            `json:"description"`
			Vars        map[string]string `json:"vars"`
			Steps       []json.RawMessage `json:"steps"`
		}
		if err := strictDecode(rs, &sc); err != nil {
			return nil, fmt.Errorf("scenarios[%d]: %w", i, err)
		}
		scen := Scenario{Name: sc.Name, Description: sc.Description, Vars: sc.Vars, Steps: make([]Step, len(sc.Steps))}
		for j, rst := range sc.Steps {
			st, err := decodeStep(rst, fmt.Sprintf("steps[%d]", j))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", scenarioLabel(i, sc.Name), err)
			}
			scen.Steps[j] = st
		}
		s.Scenarios = append(s.Scenarios, scen)
	}
	return s, nil
}

// stepKeys are the keys a step object may have.
var stepKeys = []string{
	"comment", "fetch", "expect", "repeat", "step", "advance", "fire_alarm",
	"sql_fail", "restart", "expect_sql", "expect_storage", "expect_alarm",
	"expect_log", "expect_no_log", "expect_analytics",
}

// actionKeys are the step keys that are actions; a step has exactly one.
var actionKeys = []string{
	"fetch", "repeat", "advance", "fire_alarm", "sql_fail", "restart",
	"expect_sql", "expect_storage", "expect_alarm", "expect_log",
	"expect_no_log", "expect_analytics",
}

// decodeStep decodes one step strictly; path ("steps[3]", "steps[3].step")
// prefixes its errors.
func decodeStep(b []byte, path string) (Step, error) {
	var st Step
	var m map[string]json.RawMessage
	if err := strictDecode(b, &m); err != nil {
		return st, fmt.Errorf("%s: %w", path, err)
	}
	if m == nil {
		return st, fmt.Errorf("%s: want a step object, got %s", path, bytes.TrimSpace(b))
	}
	keys := slices.Sorted(maps.Keys(m))
	for _, k := range keys {
		v := m[k]
		var err error
		switch k {
		case "comment":
			err = strictDecode(v, &st.Comment)
		case "fetch":
			err = strictDecode(v, &st.Fetch)
		case "expect":
			err = strictDecode(v, &st.Expect)
		case "repeat":
			err = strictDecode(v, &st.Repeat)
		case "step":
			inner, err := decodeStep(v, path+".step")
			if err != nil {
				return st, err
			}
			st.Step = &inner
		case "advance":
			err = strictDecode(v, &st.Advance)
		case "fire_alarm":
			err = strictDecode(v, &st.FireAlarm)
		case "sql_fail":
			err = strictDecode(v, &st.SQLFail)
		case "restart":
			err = strictDecode(v, &st.Restart)
		case "expect_sql":
			err = strictDecode(v, &st.ExpectSQL)
		case "expect_storage":
			err = strictDecode(v, &st.ExpectStorage)
		case "expect_alarm":
			err = strictDecode(v, &st.ExpectAlarm)
		case "expect_log":
			err = strictDecode(v, &st.ExpectLog)
		case "expect_no_log":
			err = strictDecode(v, &st.ExpectNoLog)
		case "expect_analytics":
			err = strictDecode(v, &st.ExpectAnalytics)
		default:
			return st, fmt.Errorf("%s: unknown step key %q%s", path, k, suggest(k, stepKeys))
		}
		if err != nil {
			return st, fmt.Errorf("%s.%s: %w", path, k, err)
		}
	}
	return st, nil
}

// strictDecode decodes one JSON value into v, refusing unknown object keys
// and trailing data; numbers in interface values become json.Number.
func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return jsonError(b, err)
	}
	if _, err := dec.Token(); err == nil {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// jsonError makes encoding/json's errors read well in a suite: unknown
// fields become unknown keys, syntax errors get a line and column.
func jsonError(b []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(b, se.Offset)
		return fmt.Errorf("JSON syntax error at line %d, column %d: %w", line, col, err)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		where := te.Field
		if where == "" {
			where = "value"
		}
		return fmt.Errorf("%s: want %s, got JSON %s", where, jsonKind(te.Type), te.Value)
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return fmt.Errorf("unknown key %s", f)
	}
	if errors.Is(err, io.EOF) {
		return errors.New("empty JSON")
	}
	return err
}

// jsonKind names what JSON a Go type is decoded from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

func lineCol(b []byte, off int64) (int, int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line, col := 1, 0
	for _, c := range b[:off] {
		if c == '\n' {
			line, col = line+1, 0
		} else {
			col++
		}
	}
	return line, col
}

// suggest returns ` (did you mean "x"?)` for a near miss among known.
func suggest(k string, known []string) string {
	best, bestD := "", 3
	for _, c := range known {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" {
		return " (known keys: " + strings.Join(known, ", ") + ")"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func scenarioLabel(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("scenarios[%d]", i)
	}
	return fmt.Sprintf("scenario %q", name)
}

// Validate checks a suite built in Go or parsed from JSON; RunSuite calls
// it. Errors match ErrInvalidSuite and name the scenario and step.
func (s *Suite) Validate() error {
	if err := s.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSuite, err)
	}
	return nil
}

func (s *Suite) validate() error {
	if s.Format != "" && s.Format != Format {
		return fmt.Errorf("format %q is not supported: want %q", s.Format, Format)
	}
	if s.Binding.Shards < 0 {
		return fmt.Errorf("binding: shards must be ≥ 0, got %d", s.Binding.Shards)
	}
	if s.Binding.SQL && s.Binding.ShardSQL {
		return errors.New("binding: sql and shard_sql: a binding has one shared database or one per shard")
	}
	if len(s.Scenarios) == 0 {
		return errors.New("the suite has no scenarios")
	}
	seen := map[string]bool{}
	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		label := scenarioLabel(i, sc.Name)
		switch {
		case strings.TrimSpace(sc.Name) == "":
			return fmt.Errorf("%s: a scenario needs a name", label)
		case seen[sc.Name]:
			return fmt.Errorf("%s: two scenarios have this name", label)
		case len(sc.Steps) == 0:
			return fmt.Errorf("%s: no steps", label)
		}
		seen[sc.Name] = true
		for j := range sc.Steps {
			if err := sc.Steps[j].validate(s.Binding, fmt.Sprintf("steps[%d]", j)); err != nil {
				return fmt.Errorf("%s: %w", label, err)
			}
		}
	}
	return nil
}

// Kind returns the step's action key ("fetch", "repeat", "expect_sql", ...),
// or "" if it has none.
func (st *Step) Kind() string {
	kinds := st.kinds()
	if len(kinds) == 0 {
		return ""
	}
	return kinds[0]
}

func (st *Step) kinds() []string {
	var k []string
	add := func(set bool, name string) {
		if set {
			k = append(k, name)
		}
	}
	add(st.Fetch != nil, "fetch")
	add(st.Repeat != 0 || st.Step != nil, "repeat")
	add(st.Advance != nil, "advance")
	add(st.FireAlarm != nil, "fire_alarm")
	add(st.SQLFail != nil, "sql_fail")
	add(st.Restart != nil, "restart")
	add(st.ExpectSQL != nil, "expect_sql")
	add(st.ExpectStorage != nil, "expect_storage")
	add(st.ExpectAlarm != nil, "expect_alarm")
	add(st.ExpectLog != nil, "expect_log")
	add(st.ExpectNoLog != nil, "expect_no_log")
	add(st.ExpectAnalytics != nil, "expect_analytics")
	return k
}

func (st *Step) validate(b Binding, path string) error {
	if err := st.check(b); err != nil {
		if k := st.Kind(); k != "" {
			return fmt.Errorf("%s (%s): %w", path, k, err)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if st.Step != nil {
		return st.Step.validate(b, path+".step")
	}
	return nil
}

func (st *Step) check(b Binding) error {
	kinds := st.kinds()
	switch {
	case len(kinds) == 0:
		return fmt.Errorf("no action: a step needs one of %s", strings.Join(actionKeys, ", "))
	case len(kinds) > 1:
		return fmt.Errorf("several actions (%s): a step has exactly one", strings.Join(kinds, ", "))
	case st.Expect != nil && st.Fetch == nil:
		return errors.New("\"expect\" belongs to a \"fetch\" step")
	}
	switch kinds[0] {
	case "fetch":
		return st.Fetch.check(st.Expect)
	case "repeat":
		switch {
		case st.Repeat < 1:
			return fmt.Errorf("repeat must be ≥ 1, got %d", st.Repeat)
		case st.Repeat > 1_000_000:
			return fmt.Errorf("repeat %d is more than 1000000", st.Repeat)
		case st.Step == nil:
			return errors.New("repeat needs a \"step\" to repeat")
		}
	case "advance":
		d := time.Duration(*st.Advance)
		switch {
		case d < 0:
			return fmt.Errorf("cannot advance by a negative duration %v", d)
		case d%time.Millisecond != 0:
			return fmt.Errorf("advance %v: alarms have millisecond resolution; use whole milliseconds", d)
		}
	case "fire_alarm", "restart":
		// Any key routes somewhere; the host refuses bad per-name keys.
	case "sql_fail":
		if !b.SQL && !b.ShardSQL {
			return errors.New("sql_fail needs \"sql\" or \"shard_sql\": true in the binding")
		}
		if b.ShardSQL && st.SQLFail.Mode == SQLFailError {
			return fmt.Errorf("mode %q does not apply to shard_sql (a shard's own database fails only as its disk does)", SQLFailError)
		}
		switch st.SQLFail.Mode {
		case SQLFailError, SQLFailCrashAfterCommit, SQLFailOff:
		default:
			return fmt.Errorf("mode %q: want %q, %q or %q", st.SQLFail.Mode, SQLFailError, SQLFailCrashAfterCommit, SQLFailOff)
		}
		if st.SQLFail.Times < 0 {
			return fmt.Errorf("times must be ≥ 0, got %d", st.SQLFail.Times)
		}
	case "expect_sql":
		e := st.ExpectSQL
		switch {
		case !b.SQL && !b.ShardSQL:
			return errors.New("expect_sql needs \"sql\" or \"shard_sql\": true in the binding")
		case b.ShardSQL && e.Key == "":
			return errors.New("with shard_sql, expect_sql needs the key of the shard whose database it queries")
		case !b.ShardSQL && e.Key != "":
			return errors.New("key applies to shard_sql only (a shared database has no shard)")
		case strings.TrimSpace(e.Query) == "":
			return errors.New("query is empty")
		case e.Rows == nil:
			return errors.New("rows is required ([] for no rows)")
		}
		for i, a := range e.Args {
			if _, err := sqlArg(a); err != nil {
				return fmt.Errorf("args[%d]: %w", i, err)
			}
		}
	case "expect_storage":
		e := st.ExpectStorage
		if e.Count == nil && e.Keys == nil && e.Entries == nil {
			return errors.New("expect_storage needs count, keys or entries")
		}
		if e.Count != nil && *e.Count < 0 {
			return fmt.Errorf("count must be ≥ 0, got %d", *e.Count)
		}
	case "expect_alarm":
		e := st.ExpectAlarm
		n := 0
		for _, set := range []bool{e.In != nil, e.At != "", e.None} {
			if set {
				n++
			}
		}
		if n != 1 {
			return errors.New("expect_alarm needs exactly one of in, at and none")
		}
		if e.At != "" {
			if _, err := time.Parse(time.RFC3339Nano, e.At); err != nil {
				return fmt.Errorf("at %q: want an RFC 3339 time like 2026-01-01T00:00:05Z", e.At)
			}
		}
	case "expect_log", "expect_no_log":
		e := st.ExpectLog
		if e == nil {
			e = st.ExpectNoLog
			if e.Count != nil {
				return errors.New("count belongs to expect_log")
			}
		}
		if e.Code == "" && e.Message == "" && e.Level == "" && len(e.Fields) == 0 {
			return errors.New("needs at least one of code, message, level and fields")
		}
		if e.Count != nil && *e.Count < 0 {
			return fmt.Errorf("count must be ≥ 0, got %d", *e.Count)
		}
		for k, v := range e.Fields {
			if _, ok := scalarString(v); !ok {
				return fmt.Errorf("fields.%s: want a string, number or boolean", k)
			}
		}
	case "expect_analytics":
		e := st.ExpectAnalytics
		if e.Count == nil || *e.Count < 0 {
			return errors.New("expect_analytics needs a count ≥ 0")
		}
	}
	return nil
}

func (f *Fetch) check(e *Expect) error {
	if f.Path != "" && !strings.HasPrefix(f.Path, "/") {
		return fmt.Errorf("path %q must start with /", f.Path)
	}
	if f.Body != nil && len(f.JSON) > 0 {
		return errors.New("fetch has both body and json; give one")
	}
	if len(f.JSON) > 0 && !json.Valid(f.JSON) {
		return errors.New("json is not valid JSON")
	}
	if e == nil {
		return nil
	}
	if e.Status != nil && e.Status.Code == 0 && e.Status.Class == 0 {
		return errors.New("expect.status is empty")
	}
	if len(e.JSON) > 0 && !json.Valid(e.JSON) {
		return errors.New("expect.json is not valid JSON")
	}
	return nil
}
