// Command alarm is a hostile plugin for the host's alarm tests. POST
// /arm?mode=M&at=MS stores the mode and sets the alarm; the alarm handler
// logs each run with its retry count, then misbehaves as the mode says:
// "trap" panics, "fail" returns an error, "loop" spins past the event
// deadline, "rearm" sets the alarm again for now (an alarm loop),
// "rearm-1s" for a second later. GET / answers "ok" (tests use it to wait
// for the shard).
package main

import (
	"errors"
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: fetch, Alarm: alarm})
}

func fetch(req *sdk.Request) *sdk.Response {
	if sdk.PathOnly(req) != "/arm" {
		return sdk.Text(200, "ok")
	}
	at, err := strconv.ParseInt(sdk.Query(req, "at"), 10, 64)
	if err != nil {
		return sdk.Text(400, "at must be unix ms")
	}
	if err := sdk.Storage().Put("mode", []byte(sdk.Query(req, "mode"))); err != nil {
		return sdk.Text(500, err.Error())
	}
	if err := sdk.SetAlarm(time.UnixMilli(at)); err != nil {
		return sdk.Text(500, err.Error())
	}
	return sdk.Text(200, "armed")
}

func alarm(info sdk.AlarmInfo) error {
	mode, _, err := sdk.Storage().Get("mode")
	if err != nil {
		return err
	}
	sdk.Warn("hostile alarm ran", "retry", strconv.Itoa(info.RetryCount), "mode", string(mode))
	switch string(mode) {
	case "trap":
		panic("hostile alarm: trap on purpose")
	case "loop":
		for {
		}
	case "fail":
		return errors.New("hostile alarm: failure on purpose")
	case "rearm":
		return sdk.SetAlarm(time.Now())
	case "rearm-1s":
		return sdk.SetAlarm(time.Now().Add(time.Second))
	}
	return nil
}
