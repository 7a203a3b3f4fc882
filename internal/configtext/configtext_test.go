package configtext

import (
	"testing"

	"github.com/edgeshard/edgeshard/host/config"
)

// TestTablesParseAsDeclared: the tables parse into the bindings, database,
// dataset and vars they declare.
func TestTablesParseAsDeclared(t *testing.T) {
	text := "listen = \"127.0.0.1:0\"\n" +
		Pipelines("/m/events.wasm", "/m/counters.wasm", 4, "sqlite:///d/analytics.db") +
		Binding("COUNTER", "/m/counter.wasm", 0, "", "") +
		D1("DB", "sqlite:///d/d1.db", "max_conns = 3") +
		Vars("COUNTER_DO_MODE", "primary", "RUNTIME_EVENT_DO_MODE", "off")
	f, err := config.Parse([]byte(text), "edgeshard.toml")
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	bs := f.DurableObjects.Bindings
	if len(bs) != 3 || bs[0].Name != "RUNTIME_EVENT_SHARD" || bs[0].SQL != "DB" || bs[0].Analytics != "AE" || bs[0].Shards != 4 ||
		bs[1].Name != "COUNTER_SHARD" || bs[1].Module != "/m/counters.wasm" || bs[1].Analytics != "" ||
		bs[2].Name != "COUNTER" || bs[2].Shards != 0 || bs[2].SQL != "" {
		t.Fatalf("bindings %+v", bs)
	}
	if d := f.D1Databases; len(d) != 1 || d[0].URL != "sqlite:///d/d1.db" || d[0].MaxConns != 3 {
		t.Fatalf("databases %+v", d)
	}
	if a := f.Analytics; len(a) != 1 || a[0].Binding != "AE" || a[0].Dataset != "runtime_events" {
		t.Fatalf("datasets %+v", a)
	}
	if f.Vars["COUNTER_DO_MODE"] != "primary" || f.Vars["RUNTIME_EVENT_DO_MODE"] != "off" {
		t.Fatalf("vars %v", f.Vars)
	}
}
