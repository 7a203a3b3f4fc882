// Command outbound is the test plugin of shard_call and http_fetch: it
// calls other shards along a path of hops, answers as the end of one, and
// fetches URLs. Every answer is text a test reads:
//
//	GET /chain?hop=B/b&hop=A/a[&spin=300ms][&path=/spin]  spin first (busy,
//	    as a long event would), then call the first hop with the rest (or
//	    with path instead); answers
//	    "<me> -> <its answer>" or "<me> err <errno>: <message>"
//	GET /chain (no hop)                       "<me> end caller=<caller> n=<count>"
//	                                          (a count in storage: the call's write)
//	GET /spin                                 spins until the host stops it
//	GET /fetch?url=U                          "status <s> <body>" or "err <errno>: <message>"
package main

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: fetch})
}

func fetch(req *sdk.Request) *sdk.Response {
	q, _ := url.ParseQuery(strings.TrimPrefix(req.Path[len(sdk.PathOnly(req)):], "?"))
	me := sdk.GetHeader(req.Header, sdk.ShardHeader)
	switch sdk.PathOnly(req) {
	case "/chain":
		if d, err := time.ParseDuration(q.Get("spin")); err == nil {
			for t0 := time.Now(); time.Since(t0) < d; {
			}
		}
		hops := q["hop"]
		if len(hops) == 0 {
			n := count()
			return sdk.Text(200, fmt.Sprintf("%s end caller=%s n=%d", me, sdk.Caller(req), n))
		}
		binding, key, _ := strings.Cut(hops[0], "/")
		rest := url.Values{"hop": hops[1:]}
		path := "/chain?" + rest.Encode()
		if p := q.Get("path"); p != "" {
			path = p
		}
		resp, err := sdk.Call(binding, key, &sdk.Request{Method: "GET", Path: path})
		if err != nil {
			return sdk.Text(200, me+" "+errText(err))
		}
		return sdk.Text(200, fmt.Sprintf("%s -> [%d] %s", me, resp.Status, resp.Body))
	case "/spin":
		for {
		}
	case "/fetch":
		resp, err := sdk.Fetch(&sdk.Request{Method: "GET", Path: q.Get("url"), Header: []sdk.Header{{Name: "X-From", Value: me}}})
		if err != nil {
			return sdk.Text(200, errText(err))
		}
		return sdk.Text(200, fmt.Sprintf("status %d %s", resp.Status, resp.Body))
	}
	return sdk.Text(404, "no route")
}

// count increments and returns the shard's stored count.
func count() int {
	v, _, _ := sdk.Storage().Get("n")
	n, _ := strconv.Atoi(string(v))
	n++
	if err := sdk.Storage().Put("n", []byte(strconv.Itoa(n))); err != nil {
		sdk.Abort(err.Error())
	}
	return n
}

func errText(err error) string {
	var he *sdk.HostError
	if errors.As(err, &he) {
		return fmt.Sprintf("err %d: %s", uint32(he.Errno), he.Message)
	}
	return "err ?: " + err.Error()
}
