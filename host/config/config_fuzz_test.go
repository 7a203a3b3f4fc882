package config

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"testing"

	"github.com/BurntSushi/toml"
)

// encode writes f back as TOML: the core settings, then the tables kept
// for other components.
func encode(f *File) ([]byte, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(f); err != nil {
		return nil, err
	}
	keys := slices.Sorted(maps.Keys(f.Extra))
	for _, k := range keys {
		if err := toml.NewEncoder(&b).Encode(map[string]any{k: f.Extra[k]}); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// core is f without what Parse derives from the source.
func core(f *File) File {
	c := *f
	c.meta, c.path, c.Extra = toml.MetaData{}, "", nil
	return c
}

// FuzzParse: arbitrary bytes never make Parse, Validate or ApplyEnv panic,
// and a file Parse accepts, written back as TOML, parses to the same
// settings.
func FuzzParse(f *testing.F) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	for _, p := range []string{"edgeshard.toml", "edgeshard.dev-counter.toml", "examples/tutorial/edgeshard.toml"} {
		if b, err := os.ReadFile(filepath.Join(root, p)); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"",
		`listen = "0.0.0.0:80"` + "\nevent_timeout = \"1ns\"\nmemory_limit_mb = 16\n",
		"[[durable_objects.bindings]]\nname = \"A\"\nmodule = \"a.wasm\"\nshards = -1\n",
		"[vars]\n\"\\u0000\" = \"\\n\"\n",
		"[auth]\nleeway = 1979-05-27T07:32:00Z\nx = [1, 2.5, nan, -inf, {a = 1}]\n",
		"event_timeout = \"-5s\"\nsync_writes = false\n",
		"unknown = 1\n",
		"[edge]\nenabled = true\n[edge.nested]\nk = 'v'\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.toml")
		if err != nil {
			return
		}
		_ = cfg.Validate()
		enc, err := encode(cfg)
		if err != nil {
			t.Fatalf("a parsed config does not encode: %v\n%s", err, data)
		}
		again, err := Parse(enc, "again.toml")
		if err != nil {
			t.Fatalf("the re-encoded config does not parse: %v\ninput:\n%s\nencoded:\n%s", err, data, enc)
		}
		if a, b := core(cfg), core(again); !reflect.DeepEqual(a, b) {
			t.Fatalf("settings changed in a round trip:\n%+v\n%+v\nencoded:\n%s", a, b, enc)
		}
		if !equalExtra(cfg.Extra, again.Extra) {
			t.Fatalf("extra tables changed in a round trip:\n%#v\n%#v\nencoded:\n%s", cfg.Extra, again.Extra, enc)
		}
		cfg.ApplyEnv(func(name string) (string, bool) { return name, len(name)%2 == 0 })
		_ = cfg.Validate()
	})
}

// equalExtra compares decoded TOML values, NaN equal to NaN. An inline
// array of tables ([{}]) decodes as []any and is written back as an array
// of tables ([[t]]), which decodes as []map[string]any: the same value.
func equalExtra(a, b any) bool {
	a, b = tableList(a), tableList(b)
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && (x == y || x != x && y != y)
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !equalExtra(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalExtra(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func tableList(v any) any {
	if ts, ok := v.([]map[string]any); ok {
		out := make([]any, len(ts))
		for i, t := range ts {
			out[i] = t
		}
		return out
	}
	return v
}
