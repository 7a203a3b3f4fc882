// Package sdk is the Go guest SDK for edgeshard plugins. A plugin is a Go
// program built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o shard.wasm .
//
// that registers its handlers from an init function:
//
//	func main() {}
//
//	func init() {
//		sdk.Serve(sdk.Handlers{Fetch: fetch, Alarm: alarm})
//	}
//
// The SDK implements the guest side of ABI v1 (abi/ABI.md): the exports the
// host calls, the encoding of requests and responses, and typed wrappers for
// every host function (storage, alarm, vars, log, SQL, analytics,
// calls to other shards, outbound fetch). WebSockets are in package
// abi/sdk/ws: importing it is what makes a plugin accept them.
//
// A shard handles one event at a time; handlers must not start goroutines
// that outlive the call (they do not run between calls). The SDK also
// exports edgeshard_fetch_batch (batch_wasm.go): when a shard has a
// backlog the host may deliver several requests in one call, and each
// still reaches Fetch as its own event.
//
// Importing the SDK sets the guest's garbage collector to GOGC=25 (Go's
// default is 100): a guest's memory never shrinks, so its heap's
// high-water mark is what each live shard costs the host. A plugin that
// keeps a large live heap and wants fewer collections may set another
// value with debug.SetGCPercent from its init function.
package sdk

import (
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
)

// Request is the HTTP request a shard receives. Its Body is owned by the
// handler (a copy), Path includes the raw query.
type Request = abi.Request

// Response is what a fetch handler returns.
type Response = abi.Response

// Header is one header field.
type Header = abi.Header

// KV is one storage entry (GetMulti, PutMulti, List).
type KV = abi.KV

// GetHeader returns the first value of the named request or response
// header (case-insensitive), or "".
func GetHeader(h []Header, name string) string { return abi.GetHeader(h, name) }

// AlarmInfo tells an alarm handler whether this run is a retry.
type AlarmInfo struct {
	// RetryCount is 0 on the first run and counts retries after failures.
	RetryCount int
	// IsRetry is RetryCount > 0.
	IsRetry bool
}

// Handlers are a plugin's entry points. Fetch is required.
type Handlers struct {
	// Fetch handles one request. Returning nil answers 500.
	Fetch func(req *Request) *Response
	// Alarm runs when the shard's alarm fires. A non-nil error makes the
	// host retry it with backoff (2 s, 4 s, ... at most 6 retries) unless
	// the handler set a new alarm.
	Alarm func(info AlarmInfo) error
}

// HostError is an error reported by the host for one call.
type HostError struct {
	Errno   abi.Errno
	Op      string
	Message string // detail from the host, if any
}

func (e *HostError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("%s: %s: %s", e.Op, e.Errno.Error(), e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Op, e.Errno.Error())
}

// Unwrap lets errors.Is(err, abi.ErrnoSQL) and friends work.
func (e *HostError) Unwrap() error { return e.Errno }

// ErrNotRegistered is returned by the init export when Serve was not called.
var ErrNotRegistered = errors.New("sdk: Serve was not called from an init function")

// Abort ends the current event without committing any of its writes: the
// host discards the instance (as after a crash), answers the request with a
// 5xx, and the shard restarts from storage on its next event. There is no
// finer-grained rollback in ABI v1; validate before writing where you can.
func Abort(reason string) {
	panic("sdk.Abort: " + reason)
}
