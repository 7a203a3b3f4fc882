// Package abi is the contract between the edgeshard host and its WebAssembly
// plugins: the ABI version, the names of exports and imports, errno values,
// limits and the message types that cross the boundary. The byte encoding of
// those messages lives in package abi/wire; the Go guest SDK in abi/sdk.
//
// The specification a plugin author reads is abi/ABI.md; this file and that
// document must agree.
package abi

import "fmt"

// Version is the ABI version this host implements and this SDK speaks. A
// module reports its version from the export ExportABIVersion; the host
// refuses any other value.
const Version = 1

// ImportModule is the wasm import module name of every host function.
const ImportModule = "edgeshard"

// WASIModule is the only other import module a plugin may use.
const WASIModule = "wasi_snapshot_preview1"

// Guest exports.
const (
	ExportABIVersion = "edgeshard_abi_version" // () -> i32
	ExportInit       = "edgeshard_init"        // () -> i32 errno
	ExportAlloc      = "edgeshard_alloc"       // (size i32) -> i32 ptr
	ExportFetch      = "edgeshard_fetch"       // (ptr i32, len i32) -> i64 (ptr<<32 | len)
	ExportAlarm      = "edgeshard_alarm"       // (retryCount i32) -> i32 errno
	// ExportFetchBatch is optional (batch.go: several queued requests in
	// one call, each answered with FnFetchRespond).
	ExportFetchBatch = "edgeshard_fetch_batch" // (ptr i32, len i32, count i32) -> i32 answered
	ExportInitialize = "_initialize"           // WASI reactor start function
	ExportMemory     = "memory"
)

// RequiredExports are the exports every plugin must have.
var RequiredExports = []string{ExportABIVersion, ExportInit, ExportAlloc, ExportFetch, ExportAlarm, ExportInitialize}

// Binding groups: every host function belongs to one group, and a namespace
// grants a set of groups. GroupCore is always granted.
const (
	GroupCore      = "core"
	GroupStorage   = "storage"
	GroupAlarm     = "alarm"
	GroupVars      = "vars"
	GroupLog       = "log"
	GroupSQL       = "sql"
	GroupAnalytics = "analytics"
	GroupCall      = "call"  // shard_call: requests to other bindings' shards
	GroupFetch     = "fetch" // http_fetch: outbound HTTP(S)
)

// AllGroups lists every binding group in a stable order.
var AllGroups = []string{GroupCore, GroupStorage, GroupAlarm, GroupVars, GroupLog, GroupSQL, GroupAnalytics, GroupCall, GroupFetch}

// Host function names (import module ImportModule), by group.
const (
	FnResultTake   = "result_take"   // core: (buf, cap) -> i64
	FnErrorMessage = "error_message" // core: (buf, cap) -> i64
	FnFetchRespond = "fetch_respond" // core: (resp_ptr, resp_len) -> i32, inside edgeshard_fetch_batch

	FnStorageGet         = "storage_get"          // (kp, kl, buf, cap) -> i64
	FnStorageGetMulti    = "storage_get_multi"    // (keysp, keysl, buf, cap) -> i64
	FnStoragePut         = "storage_put"          // (kp, kl, vp, vl, flags) -> i32
	FnStoragePutMulti    = "storage_put_multi"    // (entriesp, entriesl, flags) -> i32
	FnStorageDelete      = "storage_delete"       // (kp, kl) -> i32 (1 deleted, 0 absent)
	FnStorageDeleteMulti = "storage_delete_multi" // (keysp, keysl) -> i64 (count deleted)
	FnStorageList        = "storage_list"         // (optp, optl, buf, cap) -> i64
	FnStorageDeleteAll   = "storage_delete_all"   // () -> i32

	FnAlarmSet    = "alarm_set"    // (unixMillis i64) -> i32
	FnAlarmGet    = "alarm_get"    // () -> i64 (unix ms, or -ErrnoNotFound)
	FnAlarmDelete = "alarm_delete" // () -> i32

	FnVarGet = "var_get" // (np, nl, buf, cap) -> i64

	FnLogWrite = "log_write" // (level i32, p, l) -> i32

	FnSQLExec = "sql_exec" // (p, l, buf, cap) -> i64

	FnAnalyticsWrite = "analytics_write" // (p, l) -> i32

	FnShardCall = "shard_call" // call: (CallRequest p, l, buf, cap) -> i64 (Response)
	FnHTTPFetch = "http_fetch" // fetch: (Request p, l, buf, cap) -> i64 (Response)
)

// FunctionGroups maps each host function to its binding group.
var FunctionGroups = map[string]string{
	FnResultTake: GroupCore, FnErrorMessage: GroupCore, FnFetchRespond: GroupCore,
	FnStorageGet: GroupStorage, FnStorageGetMulti: GroupStorage, FnStoragePut: GroupStorage,
	FnStoragePutMulti: GroupStorage, FnStorageDelete: GroupStorage, FnStorageDeleteMulti: GroupStorage,
	FnStorageList: GroupStorage, FnStorageDeleteAll: GroupStorage,
	FnAlarmSet: GroupAlarm, FnAlarmGet: GroupAlarm, FnAlarmDelete: GroupAlarm,
	FnVarGet:         GroupVars,
	FnLogWrite:       GroupLog,
	FnSQLExec:        GroupSQL,
	FnAnalyticsWrite: GroupAnalytics,
	FnShardCall:      GroupCall,
	FnHTTPFetch:      GroupFetch,
}

// Errno is the numeric error code host functions return (as -errno in i64
// results) and guest exports return (as errno in i32 results).
type Errno uint32

// Errno values. ErrnoCanceled is reserved: the host does not return it
// today, but guests must treat it as a failure. ErrnoDeadline is answered
// only by shard_call and http_fetch (the event's deadline, or the fetch
// timeout, passed while waiting); any other call past the event deadline
// ends the instance.
const (
	ErrnoOK         Errno = 0
	ErrnoNotFound   Errno = 1  // key, var or alarm absent
	ErrnoInvalid    Errno = 2  // malformed arguments or encoding
	ErrnoTooLarge   Errno = 3  // a limit was exceeded
	ErrnoIO         Errno = 4  // storage failure
	ErrnoNotGranted Errno = 5  // the binding does not grant this group
	ErrnoSQL        Errno = 6  // SQL statement failed; see error_message
	ErrnoAnalytics  Errno = 7  // data point rejected; see error_message
	ErrnoDeadline   Errno = 8  // deadline exceeded (shard_call, http_fetch)
	ErrnoCanceled   Errno = 9  // reserved: cancelled
	ErrnoInternal   Errno = 10 // host bug or unexpected state
	ErrnoFault      Errno = 11 // pointer/length outside guest memory
	ErrnoNoResult   Errno = 12 // result_take without a pending result
	ErrnoLimit      Errno = 13 // a per-event budget is spent; a later event may succeed
	ErrnoQuota      Errno = 14 // the shard's storage quota is full; delete data first
	ErrnoDeadlock   Errno = 15 // shard_call would wait on a shard that waits on the caller
	ErrnoRefused    Errno = 16 // http_fetch: the destination is not allowed (fetch_hosts, the address guard)
	ErrnoNetwork    Errno = 17 // http_fetch: DNS, connection or TLS failure, or a malformed answer
)

// ErrnoMax is the largest errno this host returns. Guests must treat any
// errno they do not know as a failure.
const ErrnoMax = ErrnoNetwork

var errnoNames = map[Errno]string{
	ErrnoOK: "ok", ErrnoNotFound: "not found", ErrnoInvalid: "invalid argument",
	ErrnoTooLarge: "too large", ErrnoIO: "storage I/O error", ErrnoNotGranted: "binding not granted",
	ErrnoSQL: "SQL error", ErrnoAnalytics: "analytics error", ErrnoDeadline: "deadline exceeded",
	ErrnoCanceled: "cancelled", ErrnoInternal: "internal host error", ErrnoFault: "memory fault",
	ErrnoNoResult: "no pending result", ErrnoLimit: "event limit exceeded", ErrnoQuota: "storage quota exceeded",
	ErrnoDeadlock: "call would deadlock", ErrnoRefused: "destination refused", ErrnoNetwork: "network error",
}

func (e Errno) Error() string {
	if s, ok := errnoNames[e]; ok {
		return s
	}
	return fmt.Sprintf("errno %d", uint32(e))
}

// Limits enforced by the host on every call.
const (
	MaxKeySize            = 2048      // bytes of one storage key
	MaxValueSize          = 128 << 10 // bytes of one storage value
	MaxMultiKeys          = 128       // keys in one multi-key call
	MaxSQLStatements      = 1000      // statements in one sql_exec call
	MaxSQLArgs            = 100       // bound parameters per statement
	MaxResponseBody       = 32 << 20  // bytes of a response body
	MaxVarName            = 256       // bytes of a var name
	MaxLogMessage         = 16 << 10  // bytes of one log record
	MaxSQLText            = 100 << 10 // bytes of one statement's SQL text
	MaxSQLPayload         = 16 << 20  // bytes of one encoded sql_exec call
	MaxAnalyticsIdx       = 1         // indexes per data point
	MaxAnalyticsIdxB      = 96        // bytes of the index
	MaxAnalyticsBlob      = 20        // blobs per data point
	MaxAnalyticsBlobTotal = 16 << 10  // bytes of all blobs together
	MaxAnalyticsDbl       = 20        // doubles per data point
	MaxOutboundRequest    = 16 << 20  // bytes of one encoded shard_call or http_fetch request
	MaxCallDepth          = 8         // shards in one chain of shard_calls, the first caller and the last callee included
)

// MaxNodeID is the longest node id, the value of the reserved var
// edgeshard.node (ValidNodeID).
const MaxNodeID = 64

// ValidNodeID reports whether s is a node id: 1..MaxNodeID bytes of
// [A-Za-z0-9._-]. A node id names one host among the hosts that share a
// SQL database (a POP's host); shards key what must be unique per writer
// by it (plugins/counters: its flush sequence). Its bytes need no quoting
// in lines, keys, URLs or SQL literals.
func ValidNodeID(s string) bool {
	if s == "" || len(s) > MaxNodeID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Storage put flags.
const (
	// PutAllowUnconfirmed lets the response leave before this write is durable.
	PutAllowUnconfirmed uint32 = 1 << 0
	// PutFlags are every flag bit defined; the host refuses others
	// (ErrnoInvalid), so a later ABI can give them a meaning.
	PutFlags = PutAllowUnconfirmed
)

// Log levels for log_write; the host refuses any other (ErrnoInvalid).
const (
	LogDebug int32 = 0
	LogInfo  int32 = 1
	LogWarn  int32 = 2
	LogError int32 = 3
)
