// Command counter is the smallest useful edgeshard plugin: a durable
// per-name counter with an alarm that resets it, plus two routes that
// misbehave on purpose (spin, panic) to show how the host contains a shard.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared \
//
//	-ldflags "-X main.version=v2" -o counter.wasm ./examples/counter
package main

import (
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

// version is stamped at build time and echoed in every response, so a
// module hot-swap is visible from outside.
var version = "dev"

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: fetch, Alarm: alarm})
}

func fetch(req *sdk.Request) *sdk.Response {
	switch path := sdk.PathOnly(req); {
	case path == "/" && req.Method == "GET":
		n, err := load()
		if err != nil {
			return sdk.ErrorJSON(500, "storage", err.Error())
		}
		return reply(n)
	case path == "/increment" && req.Method == "POST":
		n, err := load()
		if err != nil {
			return sdk.ErrorJSON(500, "storage", err.Error())
		}
		n++
		if err := sdk.Storage().Put("count", strconv.AppendInt(nil, n, 10)); err != nil {
			return sdk.ErrorJSON(500, "storage", err.Error())
		}
		return reply(n)
	case path == "/reset-after" && req.Method == "POST":
		ms, err := strconv.Atoi(sdk.Query(req, "ms"))
		if err != nil || ms < 0 {
			return sdk.ErrorJSON(400, "bad_ms", "ms must be a non-negative integer")
		}
		if err := sdk.SetAlarm(time.Now().Add(time.Duration(ms) * time.Millisecond)); err != nil {
			return sdk.ErrorJSON(500, "alarm", err.Error())
		}
		n, _ := load()
		return reply(n)
	case path == "/spin" && req.Method == "POST":
		for {
		}
	case path == "/panic" && req.Method == "POST":
		panic("counter: panic requested by /panic")
	}
	return sdk.ErrorJSON(404, "not_found", "no route "+req.Method+" "+sdk.PathOnly(req))
}

func alarm(sdk.AlarmInfo) error {
	sdk.Info("counter reset by alarm")
	return sdk.Storage().Put("count", []byte("0"))
}

func load() (int64, error) {
	v, ok, err := sdk.Storage().Get("count")
	if err != nil || !ok {
		return 0, err
	}
	return strconv.ParseInt(string(v), 10, 64)
}

func reply(n int64) *sdk.Response {
	b := []byte(`{"count":`)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, `,"version":`...)
	b = strconv.AppendQuote(b, version)
	b = append(b, '}')
	return sdk.RawJSON(200, b)
}
