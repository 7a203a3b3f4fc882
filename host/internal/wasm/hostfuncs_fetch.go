package wasm

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Fetch host functions (group "fetch", granted when the binding names the
// hosts it may fetch): outbound HTTP(S), through Env.FetchHTTP, which
// applies the binding's allowed hosts, the SSRF guard, a timeout and a
// response size cap.

// fetchFuncs are the host functions of group "fetch".
var fetchFuncs = []hostFunc{httpFetch}

// httpFetch is http_fetch(req_ptr, req_len, buf, cap) -> i64: sends an
// HTTP(S) request and answers the response.
//
// Parameters:
//   - req_ptr, req_len: an encoded Request whose path is an absolute
//     http:// or https:// URL, at most abi.MaxOutboundRequest bytes;
//   - buf, cap: where the encoded Response goes (held for result_take past
//     cap).
//
// Result: the encoded Response's length (any status the server answered,
// redirects not followed). Errnos: ErrnoRefused for a host the binding
// may not fetch or an address the guard refuses (loopback, private,
// metadata…); ErrnoDeadline past the fetch timeout or the event's
// deadline; ErrnoTooLarge for a response body over the binding's cap (or
// a request over abi.MaxOutboundRequest); ErrnoNetwork for a DNS,
// connection or TLS failure; ErrnoInvalid for a malformed request or URL;
// ErrnoFault.
var httpFetch = hostFunc{abi.FnHTTPFetch, httpFetchFn, p(i32, i32, i32, i32), p(i64)}

func httpFetchFn(c *call, mod api.Module, s []uint64) {
	sendOutbound(c, mod, s, "fetch", abi.DecodeRequest, func(r *abi.Request) (*abi.Response, error) {
		return c.env.FetchHTTP(c.ctx, r)
	})
}
