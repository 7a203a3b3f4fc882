package sdk

import (
	"encoding/json"
	"net/url"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
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

// ShardHeader is the request header the host sets on every fetch to
// "<binding>/<shard>".
const ShardHeader = "X-Edgeshard-Shard"

// ObjectName returns the part of req's ShardHeader after the binding: the
// name a per-name binding routed the request by (for a sharded binding the
// shard's number), or "" when the header is absent. ShardName answers the
// whole "<binding>/<shard>" without a request, by a host call.
func ObjectName(req *Request) string {
	_, name, _ := strings.Cut(abi.GetHeader(req.Header, ShardHeader), "/")
	return name
}

// PlainID reports whether s is 1..maxLen bytes of A-Z a-z 0-9 _ - . : @,
// an id that is safe as a storage key suffix, in a JSON string and in a
// log line as it is.
func PlainID(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_-.:@", c) >= 0) {
			return false
		}
	}
	return true
}
