package sdk

import (
	"bytes"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk/internal/guestmem"
)

// CallerHeader is set by the host on a request another shard sent with
// Call to the caller's "<binding>/<shard>"; no other request carries it
// (a client's is removed), so a shard may trust it.
const CallerHeader = "X-Edgeshard-Caller"

// Caller returns the "<binding>/<shard>" of the shard that sent req with
// Call, or "" for a request from outside.
func Caller(req *Request) string { return abi.GetHeader(req.Header, CallerHeader) }

// Call sends req to the shard that key routes to in binding, as a request
// to /do/{binding}/{key}{req.Path} would reach it, and returns that shard's
// response once its writes are durable. The binding must be one the
// caller's binding lists in its calls. The current event waits meanwhile,
// within its own deadline.
//
// A failure of the called shard (a crash, its queue full…) is a response
// with the status and JSON error body /do would answer. Errors are for the
// call itself, a *HostError: abi.ErrnoNotGranted (a binding not listed),
// abi.ErrnoDeadlock (the called shard is waiting on this one: A → B → A,
// or A → A), abi.ErrnoLimit (more than abi.MaxCallDepth shards in a chain
// of calls), abi.ErrnoDeadline (this event's deadline passed),
// abi.ErrnoInvalid (a key the binding cannot route). Test with errors.Is:
// errors.Is(err, abi.ErrnoDeadlock).
func Call(binding, key string, req *Request) (*Response, error) {
	st.enc = abi.AppendCallRequest(st.enc[:0], &abi.CallRequest{Binding: binding, Key: key, Request: *req})
	p, c := scratchArgs()
	return outboundResponse("call", hostShardCall(guestmem.Bytes(st.enc), uint32(len(st.enc)), p, c))
}

// Fetch sends an HTTP(S) request to the absolute URL in req.Path
// ("https://api.example.com/v1/x?y=1") and returns the response (redirects
// are not followed). The binding must allow the host (fetch_hosts); the
// host refuses loopback, private and metadata addresses unless the
// operator allowed that exact host:port.
//
// Errors are a *HostError: abi.ErrnoRefused (a host not allowed, an
// address the guard refuses), abi.ErrnoDeadline (the fetch timeout or the
// event's deadline), abi.ErrnoTooLarge (a response body over the binding's
// cap), abi.ErrnoNetwork (DNS, connection, TLS), abi.ErrnoInvalid (a bad
// URL or method), abi.ErrnoNotGranted (no fetch hosts).
func Fetch(req *Request) (*Response, error) {
	st.enc = abi.AppendRequest(st.enc[:0], req)
	p, c := scratchArgs()
	return outboundResponse("fetch", hostHTTPFetch(guestmem.Bytes(st.enc), uint32(len(st.enc)), p, c))
}

// outboundResponse decodes the Response a call or fetch answered, its
// body copied out of the scratch buffer the next host call reuses.
func outboundResponse(op string, r int64) (*Response, error) {
	b, err := result(op, r)
	if err != nil {
		return nil, err
	}
	resp, err := abi.DecodeResponse(b)
	if err != nil {
		return nil, &HostError{Errno: abi.ErrnoInternal, Op: op, Message: err.Error()}
	}
	resp.Body = bytes.Clone(resp.Body)
	return resp, nil
}
