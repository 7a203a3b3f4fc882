package sdk

import (
	"encoding/json"
	"net/url"
	"strings"
)

// Text returns a text/plain response.
func Text(status int, body string) *Response {
	return withContentType(status, "text/plain; charset=utf-8", []byte(body))
}

// withContentType builds a response with one header in one allocation.
func withContentType(status int, ctype string, body []byte) *Response {
	x := &struct {
		r Response
		h [1]Header
	}{}
	x.h[0] = Header{Name: "Content-Type", Value: ctype}
	x.r = Response{Status: status, Header: x.h[:], Body: body}
	return &x.r
}

// JSON returns an application/json response with v encoded. It uses
// encoding/json; hot paths may build the body by hand with RawJSON.
func JSON(status int, v any) *Response {
	b, err := json.Marshal(v)
	if err != nil {
		return ErrorJSON(500, "encode_failed", err.Error())
	}
	return RawJSON(status, b)
}

// RawJSON returns an application/json response with an encoded body.
func RawJSON(status int, body []byte) *Response {
	return withContentType(status, "application/json", body)
}

// ErrorJSON returns {"error":{"code":code,"message":msg}} with status.
func ErrorJSON(status int, code, msg string) *Response {
	b, _ := json.Marshal(map[string]map[string]string{"error": {"code": code, "message": msg}})
	return RawJSON(status, b)
}

// PathOnly returns the request path without its query.
func PathOnly(req *Request) string {
	if i := strings.IndexByte(req.Path, '?'); i >= 0 {
		return req.Path[:i]
	}
	return req.Path
}

// Query returns the first value of a query parameter of the request path.
func Query(req *Request, name string) string {
	i := strings.IndexByte(req.Path, '?')
	if i < 0 {
		return ""
	}
	q, err := url.ParseQuery(req.Path[i+1:])
	if err != nil {
		return ""
	}
	return q.Get(name)
}
