package sdk

import (
	"encoding/json"
	"testing"
)

func TestRouter(t *testing.T) {
	ok := func(name string) func(*Request) *Response {
		return func(*Request) *Response { return Text(200, name) }
	}
	routes := []Route{
		{Method: "POST", Path: "/join", Handle: ok("join")},
		{Method: "GET", Path: "/members", Handle: ok("members")},
		{Method: "PUT", Path: "/members", Handle: ok("put members")},
	}
	type want struct {
		status int
		body   string // the handler's body, or the error code
		allow  string
	}
	for _, answer405 := range []bool{false, true} {
		rt := Router{Routes: routes, Answer405: answer405}
		for _, c := range []struct {
			method, path string
			want         want
		}{
			{"POST", "/join", want{200, "join", ""}},
			{"POST", "/join?x=1", want{200, "join", ""}},
			{"GET", "/members", want{200, "members", ""}},
			{"PUT", "/members", want{200, "put members", ""}},
			{"GET", "/nope", want{404, "not_found", ""}},
			{"GET", "/join", map[bool]want{false: {404, "not_found", ""}, true: {405, "method_not_allowed", "POST"}}[answer405]},
			{"DELETE", "/members?a=b", map[bool]want{false: {404, "not_found", ""}, true: {405, "method_not_allowed", "GET, PUT"}}[answer405]},
		} {
			r := rt.Fetch(&Request{Method: c.method, Path: c.path})
			body := string(r.Body)
			if r.Status >= 400 {
				var e struct {
					Error struct{ Code, Message string }
				}
				if err := json.Unmarshal(r.Body, &e); err != nil {
					t.Fatalf("%s %s: %s: %v", c.method, c.path, r.Body, err)
				}
				body = e.Error.Code
			}
			if got := (want{r.Status, body, GetHeader(r.Header, "Allow")}); got != c.want {
				t.Errorf("Answer405=%v %s %s: got %+v, want %+v", answer405, c.method, c.path, got, c.want)
			}
		}
	}
	r := NotFound(&Request{Method: "GET", Path: "/x?y"})
	if string(r.Body) != `{"error":{"code":"not_found","message":"no route GET /x"}}` {
		t.Fatalf("NotFound: %s", r.Body)
	}
	r = MethodNotAllowed(&Request{Method: "GET", Path: "/x?y"}, "POST")
	if string(r.Body) != `{"error":{"code":"method_not_allowed","message":"GET /x is not allowed; use POST"}}` || GetHeader(r.Header, "Content-Type") != "application/json" {
		t.Fatalf("MethodNotAllowed: %s %v", r.Body, r.Header)
	}
}
