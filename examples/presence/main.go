// Command presence is an edgeshard example: one shard per room knows who is
// online. Clients join, send a heartbeat at least every 30 s and leave; a
// member whose heartbeats stop is dropped 30 s after the last one by an
// alarm set for the earliest expiry in the room.
//
// Routes (the shard's name is the room's name):
//
//	POST /join       {"user":"ann"}   join the room (a member rejoining just stays)
//	POST /heartbeat  {"user":"ann"}   stay online another 30 s; 404 not_member if not online
//	POST /leave      {"user":"ann"}   leave now
//	GET  /members                     who is online, by user id
//
// Build:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o presence.wasm ./examples/presence
package main

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

const (
	// timeout is how long a member stays online after its last join or
	// heartbeat.
	timeout = 30 * time.Second
	// maxIDLen bounds user ids.
	maxIDLen = 64
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: fetch, Alarm: expire})
}

func fetch(req *sdk.Request) *sdk.Response {
	switch path := sdk.PathOnly(req); {
	case path == "/join" && req.Method == "POST":
		return join(req)
	case path == "/heartbeat" && req.Method == "POST":
		return heartbeat(req)
	case path == "/leave" && req.Method == "POST":
		return leave(req)
	case path == "/members" && req.Method == "GET":
		return members(req)
	}
	return sdk.ErrorJSON(404, "not_found", "no route "+req.Method+" "+sdk.PathOnly(req))
}

func join(req *sdk.Request) *sdk.Response {
	user, bad := userOf(req)
	if bad != nil {
		return bad
	}
	now := time.Now().UnixMilli()
	m, err := loadMember(user)
	if err != nil {
		return storageError(err)
	}
	online := m.onlineAt(now)
	if !online {
		// New, or timed out and not yet swept: a fresh join.
		m.joined = now
	}
	if err := touch(&m, now, roomName(req)); err != nil {
		return storageError(err)
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "room", roomName(req))
	b = sdk.AppendJSONStr(b, "user", user)
	b = sdk.AppendJSONBool(b, "joined", !online)
	b = sdk.AppendJSONInt(b, "expires_at", m.expires())
	return sdk.RawJSON(200, append(b, '}'))
}

func heartbeat(req *sdk.Request) *sdk.Response {
	user, bad := userOf(req)
	if bad != nil {
		return bad
	}
	now := time.Now().UnixMilli()
	m, err := loadMember(user)
	if err != nil {
		return storageError(err)
	}
	if !m.onlineAt(now) {
		return sdk.ErrorJSON(404, "not_member", user+" is not online in this room: join first")
	}
	if err := touch(&m, now, roomName(req)); err != nil {
		return storageError(err)
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "user", user)
	b = sdk.AppendJSONInt(b, "expires_at", m.expires())
	return sdk.RawJSON(200, append(b, '}'))
}

func leave(req *sdk.Request) *sdk.Response {
	user, bad := userOf(req)
	if bad != nil {
		return bad
	}
	m, err := loadMember(user)
	if err != nil {
		return storageError(err)
	}
	wasOnline := m.onlineAt(time.Now().UnixMilli())
	if m.stored {
		if err := remove(m); err != nil {
			return storageError(err)
		}
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "user", user)
	b = sdk.AppendJSONBool(b, "left", wasOnline)
	return sdk.RawJSON(200, append(b, '}'))
}

func members(req *sdk.Request) *sdk.Response {
	all, err := online(time.Now().UnixMilli())
	if err != nil {
		return storageError(err)
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "room", roomName(req))
	b = sdk.AppendJSONInt(b, "count", int64(len(all)))
	b = append(sdk.AppendJSONField(b, "members"), '[')
	for i, m := range all {
		if i > 0 {
			b = append(b, ',')
		}
		b = sdk.AppendJSONStr(append(b, '{'), "user", m.user)
		b = sdk.AppendJSONInt(b, "joined_at", m.joined)
		b = sdk.AppendJSONInt(b, "last_seen", m.lastSeen)
		b = append(b, '}')
	}
	return sdk.RawJSON(200, append(b, ']', '}'))
}

// userOf decodes {"user":"..."} or answers why it cannot.
func userOf(req *sdk.Request) (string, *sdk.Response) {
	var in struct {
		User string `json:"user"`
	}
	if err := json.Unmarshal(req.Body, &in); err != nil {
		return "", sdk.ErrorJSON(400, "bad_body", `want {"user":"..."}: `+err.Error())
	}
	if !validID(in.User) {
		return "", sdk.ErrorJSON(400, "bad_user", "user must be 1-64 characters of A-Z a-z 0-9 _ - . : @")
	}
	return in.User, nil
}

// roomName is the shard's name: the host sets X-Edgeshard-Shard to
// "BINDING/name" on every request.
func roomName(req *sdk.Request) string {
	_, name, _ := strings.Cut(sdk.GetHeader(req.Header, "X-Edgeshard-Shard"), "/")
	return name
}

// validID reports whether s is a usable user id. Ids are storage key
// suffixes and appear in JSON, so they are kept to a plain alphabet.
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
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

func storageError(err error) *sdk.Response {
	return sdk.ErrorJSON(500, "storage", err.Error())
}
