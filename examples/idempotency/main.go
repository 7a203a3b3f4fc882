// Command idempotency is an edgeshard example: an idempotency-key store.
// POST /run with an Idempotency-Key header runs an operation once; its
// response is stored and replayed, byte for byte, for every repeat of the
// key within a TTL (24 h by default). An alarm set for the earliest expiry
// deletes expired keys and re-arms itself for the next one.
//
// Route the requests of one client (an account, an API key) to one shard,
// e.g. /do/IDEMPOTENCY/acct-42/run: keys are unique per client, and the
// shard then sees every repeat of a key. The shard handles one event at a
// time, so two concurrent requests with the same key cannot both run the
// operation: the second waits and gets the replay.
//
//	POST /run[?ttl_ms=N]   Idempotency-Key: <key>   body: a JSON value
//
// The operation stands for real work (charge a card, create an order): it
// takes the next sequence number and echoes the request, answering 201
// {"seq":1,"request":...} with Idempotent-Replayed: false. A repeat gets
// the same status and body with Idempotent-Replayed: true; a repeat with a
// different body answers 422 key_reused. Requests refused before the
// operation runs (no key, a body that is not JSON) are not stored.
//
// Build:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o idempotency.wasm ./examples/idempotency
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

const (
	// defaultTTL is how long a response is replayed; ?ttl_ms= overrides it
	// up to maxTTL.
	defaultTTL = 24 * time.Hour
	maxTTL     = 30 * 24 * time.Hour
	// maxKeyLen bounds the Idempotency-Key header.
	maxKeyLen = 255
	// replayedHeader tells a client whether it got a stored response.
	replayedHeader = "Idempotent-Replayed"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: router.Fetch, Alarm: expire})
}

var router = sdk.Router{Routes: []sdk.Route{{Method: "POST", Path: "/run", Handle: run}}}

// run answers a repeat from storage, or runs the operation and stores its
// response. The operation's writes and the stored response commit in one
// event: either both happen or neither.
func run(req *sdk.Request) *sdk.Response {
	key := header(req.Header, "Idempotency-Key")
	switch {
	case key == "":
		return sdk.ErrorJSON(400, "missing_key", "POST /run needs an Idempotency-Key header")
	case !validKey(key):
		return sdk.ErrorJSON(400, "bad_key", "Idempotency-Key must be 1-255 printable ASCII characters without spaces")
	}
	ttl := defaultTTL
	if q := sdk.Query(req, "ttl_ms"); q != "" {
		ms, err := strconv.ParseInt(q, 10, 64)
		if err != nil || ms < 1 || ms > maxTTL.Milliseconds() {
			return sdk.ErrorJSON(400, "bad_ttl", "ttl_ms must be an integer from 1 to 2592000000 (30 days)")
		}
		ttl = time.Duration(ms) * time.Millisecond
	}
	now := time.Now()
	fp := fingerprint(req.Body)
	old, found, err := loadRecord(key)
	if err != nil {
		return storageError(err)
	}
	if found && old.expires > now.UnixMilli() {
		if old.fingerprint != fp {
			return sdk.ErrorJSON(422, "key_reused", "this Idempotency-Key was used for a different request")
		}
		return old.response(true)
	}
	if found {
		// Expired, but the alarm has not swept it yet: forget it now.
		if _, err := sdk.Storage().DeleteMulti([]string{recordPrefix + key, old.expiryKey(key)}); err != nil {
			return storageError(err)
		}
	}

	status, body, errResp := operation(req.Body)
	if errResp != nil {
		return errResp
	}
	rec := record{expires: now.Add(ttl).UnixMilli(), status: status, fingerprint: fp, contentType: "application/json", body: body}
	if err := saveRecord(key, rec); err != nil {
		return storageError(err)
	}
	return rec.response(false)
}

// operation is the work a key protects. It answers the response to store,
// or a response that refuses the request without storing it.
func operation(body []byte) (int, []byte, *sdk.Response) {
	if len(body) == 0 {
		body = []byte("null")
	}
	if !json.Valid(body) {
		return 0, nil, sdk.ErrorJSON(400, "bad_body", "the request body must be JSON")
	}
	seq, err := nextSeq()
	if err != nil {
		return 0, nil, storageError(err)
	}
	out := strconv.AppendInt([]byte(`{"seq":`), seq, 10)
	out = append(out, `,"request":`...)
	out = append(out, body...)
	return 201, append(out, '}'), nil
}

// fingerprint identifies a request body: a repeat must send the same one.
func fingerprint(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:16])
}

// validKey accepts 1..255 bytes of printable ASCII without spaces.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > maxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] > '~' {
			return false
		}
	}
	return true
}

func storageError(err error) *sdk.Response {
	return sdk.ErrorJSON(500, "storage", err.Error())
}
