package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// sqlArg converts a JSON query argument to a SQL argument. An int or a
// boolean is left for the binding, which converts it as it converts a
// plugin's (a boolean is 0 or 1).
func sqlArg(v any) (any, error) {
	switch x := v.(type) {
	case nil, string, int64, float64, int, bool:
		return x, nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("number %s: %w", x, err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("want null, a number, a string or a boolean, got %s", show(v))
}

// scalarString returns the string form of a JSON scalar: a string as is,
// a number as written, a boolean as true/false.
func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	}
	return "", false
}

// decodeJSON decodes b with numbers as json.Number.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return v, nil
}

// jsonSubset returns "" if got contains want (objects may have more keys,
// arrays match element by element, numbers compare numerically), else
// where and how they differ, e.g. `$.buckets[0].remaining: want 0, got 3`.
func jsonSubset(want, got any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: want an object, got %s", path, show(got))
		}
		keys := slices.Sorted(maps.Keys(w))
		for _, k := range keys {
			gv, ok := g[k]
			if !ok {
				return fmt.Sprintf("%s.%s: missing, want %s", path, k, show(w[k]))
			}
			if d := jsonSubset(w[k], gv, path+"."+k); d != "" {
				return d
			}
		}
		return ""
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Sprintf("%s: want an array, got %s", path, show(got))
		}
		if len(g) != len(w) {
			return fmt.Sprintf("%s: want %d elements, got %d: %s", path, len(w), len(g), show(got))
		}
		for i := range w {
			if d := jsonSubset(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	case json.Number:
		if !numEqual(w, got) {
			return fmt.Sprintf("%s: want %s, got %s", path, w, show(got))
		}
		return ""
	default:
		if want != got {
			return fmt.Sprintf("%s: want %s, got %s", path, show(want), show(got))
		}
		return ""
	}
}

// numEqual compares a JSON number with a decoded value: exactly against
// integers and JSON numbers, as float64 against a float64.
func numEqual(want json.Number, got any) bool {
	switch g := got.(type) {
	case float64:
		f, err := want.Float64()
		return err == nil && f == g
	case int64, int, json.Number:
		w, ok := new(big.Rat).SetString(want.String())
		if !ok {
			return false
		}
		gr, ok := new(big.Rat).SetString(fmt.Sprint(g))
		return ok && w.Cmp(gr) == 0
	}
	return false
}

// rowsDiff returns "" if got equals want row by row, else the first
// difference.
func rowsDiff(want, got [][]any) string {
	if len(want) != len(got) {
		return fmt.Sprintf("want %d rows, got %d", len(want), len(got))
	}
	for i := range want {
		if len(want[i]) != len(got[i]) {
			return fmt.Sprintf("row %d: want %d columns, got %d", i, len(want[i]), len(got[i]))
		}
		for j := range want[i] {
			if !sqlEqual(want[i][j], got[i][j]) {
				return fmt.Sprintf("row %d column %d: want %s, got %s", i, j, show(want[i][j]), show(got[i][j]))
			}
		}
	}
	return ""
}

// sqlEqual compares an expected JSON cell with a SQL value (nil, int64,
// float64, string).
func sqlEqual(want, got any) bool {
	switch w := want.(type) {
	case nil:
		return got == nil
	case string:
		g, ok := got.(string)
		return ok && g == w
	case bool:
		g, ok := got.(int64)
		return ok && (g != 0) == w
	case json.Number:
		return numEqual(w, got)
	case int:
		return numEqual(json.Number(strconv.Itoa(w)), got)
	case int64:
		return numEqual(json.Number(strconv.FormatInt(w, 10)), got)
	case float64:
		g, ok := got.(float64)
		if !ok {
			return numEqual(json.Number(strconv.FormatFloat(w, 'g', -1, 64)), got)
		}
		return g == w
	}
	return false
}

// sqlValue shows a value of a query's result (an ABI SQL value: the
// binding normalised what the driver scanned) as a suite's JSON has it:
// a blob as a string.
func sqlValue(v any) any {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return v
}

// show renders a value compactly for a failure message.
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return truncate(string(b), 300)
}

// truncate cuts s to at most n bytes, saying how much it left out.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("… (%d more bytes)", len(s)-n)
}

// compactJSON returns raw JSON on one line.
func compactJSON(raw []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return strings.TrimSpace(string(raw))
	}
	return b.String()
}
