// Command brokencounter is examples/counter with one rule broken on
// purpose: its alarm logs "counter reset by alarm" but leaves the count as
// it is. The conformance tests check that the counter suite
// (examples/counter/conformance.json) catches it.
package main

import (
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

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
	case path == "/panic" && req.Method == "POST":
		panic("brokencounter: panic requested by /panic")
	}
	return sdk.ErrorJSON(404, "not_found", "no route "+req.Method+" "+sdk.PathOnly(req))
}

// alarm is the broken rule: it claims to reset the counter and does not.
func alarm(sdk.AlarmInfo) error {
	sdk.Info("counter reset by alarm")
	return nil
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
	b = append(b, `,"version":"broken"}`...)
	return sdk.RawJSON(200, b)
}
