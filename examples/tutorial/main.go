// Command pageviews counts the views of a site's pages: one shard per page,
// reached at /do/PAGEVIEWS/{page}/. An alarm copies the counts to SQL and
// analytics a few seconds after they change. docs/WRITING_SHARDS.md builds
// it step by step.
package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: fetch, Alarm: flush})
}

// fetch handles one request. The host runs one event at a time per shard
// and releases the response only once the event's writes are durable.
func fetch(req *sdk.Request) *sdk.Response {
	switch path := sdk.PathOnly(req); {
	case req.Method == "POST" && path == "/view":
		return view(req)
	case req.Method == "GET" && path == "/":
		return stats(req)
	case req.Method == "GET" && path == "/top":
		return top()
	}
	return sdk.ErrorJSON(404, "not_found", "no route "+req.Method+" "+sdk.PathOnly(req))
}

// view counts one view of this shard's page.
func view(req *sdk.Request) *sdk.Response {
	views, err := number("views")
	if err != nil {
		return sdk.ErrorJSON(500, "storage", err.Error())
	}
	views++
	if err := sdk.Storage().Put("views", []byte(strconv.FormatInt(views, 10))); err != nil {
		return sdk.ErrorJSON(500, "storage", err.Error())
	}
	// The first view since the last flush schedules the next one.
	if _, scheduled, err := sdk.GetAlarm(); err != nil {
		return sdk.ErrorJSON(500, "alarm", err.Error())
	} else if !scheduled {
		// An alarm event has no request: remember the page's name for it.
		if err := sdk.Storage().Put("page", []byte(pageName(req))); err != nil {
			return sdk.ErrorJSON(500, "storage", err.Error())
		}
		if err := sdk.SetAlarm(time.Now().Add(flushEvery())); err != nil {
			return sdk.ErrorJSON(500, "alarm", err.Error())
		}
	}
	return sdk.JSON(200, map[string]any{"page": pageName(req), "views": views})
}

// stats answers the page's count and how much of it is in SQL already.
func stats(req *sdk.Request) *sdk.Response {
	views, err := number("views")
	if err != nil {
		return sdk.ErrorJSON(500, "storage", err.Error())
	}
	flushed, err := number("flushed")
	if err != nil {
		return sdk.ErrorJSON(500, "storage", err.Error())
	}
	return sdk.JSON(200, map[string]any{"page": pageName(req), "views": views, "flushed": flushed})
}

// pageName is this shard's name: the host sets the X-Edgeshard-Shard
// header to "PAGEVIEWS/<page>" on every request.
func pageName(req *sdk.Request) string {
	for _, h := range req.Header {
		if strings.EqualFold(h.Name, "X-Edgeshard-Shard") {
			_, page, _ := strings.Cut(h.Value, "/")
			return page
		}
	}
	return ""
}

// number reads a decimal number from storage; a missing key is 0.
func number(key string) (int64, error) {
	v, ok, err := sdk.Storage().Get(key)
	if err != nil || !ok {
		return 0, err
	}
	return strconv.ParseInt(string(v), 10, 64)
}

// flushEvery is the FLUSH_EVERY var ("10s", "1m", ...), default 10 s.
func flushEvery() time.Duration {
	d, err := time.ParseDuration(sdk.VarOr("FLUSH_EVERY", "10s"))
	if err != nil || d <= 0 {
		return 10 * time.Second
	}
	return d
}
