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
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

const (
	// timeout is how long a member stays online after its last join or
	// heartbeat.
	timeout = 30 * time.Second
	// maxIDLen bounds user ids. Ids are storage key suffixes and appear
	// in JSON, so they are kept to a plain alphabet (sdk.PlainID).
	maxIDLen = 64
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: router.Fetch, Alarm: expire})
}

var router = sdk.Router{Routes: []sdk.Route{
	{Method: "POST", Path: "/join", Handle: join},
	{Method: "POST", Path: "/heartbeat", Handle: heartbeat},
	{Method: "POST", Path: "/leave", Handle: leave},
	{Method: "GET", Path: "/members", Handle: members},
}}

func join(req *sdk.Request) *sdk.Response {
	m, bad := memberOf(req)
	if bad != nil {
		return bad
	}
	now := time.Now().UnixMilli()
	online := m.onlineAt(now)
	if !online {
		// New, or timed out and not yet swept: a fresh join.
		m.joined = now
	}
	if err := touch(&m, now, roomName(req)); err != nil {
		return storageError(err)
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "room", roomName(req))
	b = sdk.AppendJSONStr(b, "user", m.user)
	b = sdk.AppendJSONBool(b, "joined", !online)
	b = sdk.AppendJSONInt(b, "expires_at", m.expires())
	return sdk.RawJSON(200, append(b, '}'))
}

func heartbeat(req *sdk.Request) *sdk.Response {
	m, bad := memberOf(req)
	if bad != nil {
		return bad
	}
	now := time.Now().UnixMilli()
	if !m.onlineAt(now) {
		return sdk.ErrorJSON(404, "not_member", m.user+" is not online in this room: join first")
	}
	if err := touch(&m, now, roomName(req)); err != nil {
		return storageError(err)
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "user", m.user)
	b = sdk.AppendJSONInt(b, "expires_at", m.expires())
	return sdk.RawJSON(200, append(b, '}'))
}

func leave(req *sdk.Request) *sdk.Response {
	m, bad := memberOf(req)
	if bad != nil {
		return bad
	}
	wasOnline := m.onlineAt(time.Now().UnixMilli())
	if m.stored {
		if err := remove(m); err != nil {
			return storageError(err)
		}
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "user", m.user)
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

// memberOf decodes {"user":"..."} and loads the user's presence, or
// answers why it cannot.
func memberOf(req *sdk.Request) (member, *sdk.Response) {
	var in struct {
		User string `json:"user"`
	}
	if err := json.Unmarshal(req.Body, &in); err != nil {
		return member{}, sdk.ErrorJSON(400, "bad_body", `want {"user":"..."}: `+err.Error())
	}
	if !sdk.PlainID(in.User, maxIDLen) {
		return member{}, sdk.ErrorJSON(400, "bad_user", "user must be 1-64 characters of A-Z a-z 0-9 _ - . : @")
	}
	m, err := loadMember(in.User)
	if err != nil {
		return member{}, storageError(err)
	}
	return m, nil
}

// roomName is the shard's name, the room's: the object name the request
// was routed by.
func roomName(req *sdk.Request) string { return sdk.ObjectName(req) }

func storageError(err error) *sdk.Response {
	return sdk.ErrorJSON(500, "storage", err.Error())
}
