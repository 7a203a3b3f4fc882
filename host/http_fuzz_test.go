package host_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/rs/zerolog"
)

// shardErrorCodes are the 5xx codes a request may get because of what the
// shard did, not the host.
var shardErrorCodes = map[string]bool{"shard_timeout": true, "shard_crashed": true, "shard_bad_response": true}

// FuzzDO sends arbitrary requests — method, target, one header, body — as
// a client would put them on the wire, to the host's /do routes: a sharded
// counter (its /spin and /panic routes misbehave on purpose) and a per-name
// namespace. The host must never panic, and must never answer 5xx except
// for a shard's own failure.
func FuzzDO(f *testing.F) {
	for _, s := range [][5]string{
		{"POST", "/do/COUNTER/a/increment", "X-Test", "1", ""},
		{"GET", "/do/COUNTER/a/", "", "", ""},
		{"GET", "/do/COUNTER/%2F%00/x?y=%zz", "Content-Type", "application/json", "{}"},
		{"POST", "/do/NAMED/" + strings.Repeat("k", host.MaxNameBytes+1) + "/", "", "", ""},
		{"POST", "/do/NAMED/a%2Fb/c/../d", "X-Edgeshard-Shard", "forged", "body"},
		{"DELETE", "/do/NOPE/a/", "", "", ""},
		{"PUT", "/do/COUNTER/a/reset-after?ms=-1", "", "", strings.Repeat("x", 5000)},
		{"GET", "/healthz", "", "", ""},
		{"OPTIONS", "*", "", "", ""},
		{"GET", "http://evil.example/do/COUNTER/a/", "", "", ""},
		{"POST", "/do/COUNTER/a/panic", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	h := testutil.Host(f, harness.Memory(), harness.LogLevel(zerolog.Disabled),
		harness.Configure(func(c *host.Config) {
			c.EventTimeout, c.IdleTimeout, c.MaxBodyBytes = 200*time.Millisecond, 100*time.Millisecond, 4096
		}),
		// Sharded, so fuzzed keys share four instances of the Go guest.
		harness.Bindings(host.Binding{Name: "COUNTER", Module: testutil.Plugin(f, "examples/counter", "-X main.version=fuzz"), Shards: 4}),
		// One small instance per name, evicted soon after.
		harness.Bindings(host.Binding{Name: "NAMED", ModuleBytes: wasmtest.Plugin().Bytes()}),
	).Host
	handler := h.Handler()
	f.Fuzz(func(t *testing.T, method, target, hname, hval, body string) {
		var raw strings.Builder
		raw.WriteString(method + " " + target + " HTTP/1.1\r\nHost: edge.test\r\n")
		if hname != "" {
			raw.WriteString(hname + ": " + hval + "\r\n")
		}
		raw.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw.String())))
		if err != nil {
			return // not a request a server would hand to a handler
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code < 100 || rec.Code > 599 {
			t.Fatalf("%s %q: status %d", method, target, rec.Code)
		}
		if rec.Code >= 500 {
			var e struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !shardErrorCodes[e.Error.Code] {
				t.Fatalf("%s %q: host error %d %s", method, target, rec.Code, rec.Body.Bytes())
			}
		}
	})
}
