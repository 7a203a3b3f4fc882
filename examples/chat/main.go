// Command chat is an edgeshard example: one shard per room (a per-name
// binding), its members connected by WebSockets that the host keeps open
// while the room's instance is evicted (hibernation).
//
// Routes (the shard's name is the room's):
//
//	GET /               a chat page for a browser (it connects to /ws)
//	GET /ws?user=ann    the WebSocket: join as ann
//	GET /members        who is connected: {"room","members":["ann",...]}
//	GET /history        the last 50 messages, oldest first
//
// On a socket, a text message is said to the room; "/to bob hello"
// whispers to bob's sockets only; "ping" is answered "pong" by the host
// itself (an auto-response: the room is not woken). Every member gets
// each line as JSON: {"type":"message"|"whisper"|"join"|"leave","user",
// "text","at"}.
//
// Build:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o chat.wasm ./examples/chat
package main

import (
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/abi/sdk/ws"
)

const (
	// maxUser bounds user names (sdk.PlainID: safe in tags, keys, JSON).
	maxUser = 32
	// maxText bounds one message's text.
	maxText = 2000
	// userTag prefixes the tag naming a socket's user.
	userTag = "user:"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: router.Fetch})
	ws.Serve(ws.Handlers{Message: message, Close: leave})
}

var router = sdk.Router{Routes: []sdk.Route{
	{Method: "GET", Path: "/", Handle: page},
	{Method: "GET", Path: "/ws", Handle: join},
	{Method: "GET", Path: "/members", Handle: members},
	{Method: "GET", Path: "/history", Handle: history},
}}

// join accepts a member's socket: tagged with its user, the user's name
// as its attachment (what every later event of the socket needs, across
// hibernation), then the recent history for it and a join line for all.
func join(req *sdk.Request) *sdk.Response {
	if !ws.IsUpgrade(req) {
		return sdk.ErrorJSON(426, "upgrade_required", "connect with a WebSocket (this page's / has a client)")
	}
	user := sdk.Query(req, "user")
	if !sdk.PlainID(user, maxUser) {
		return sdk.ErrorJSON(400, "bad_user", "user must be 1-32 characters of A-Z a-z 0-9 _ - . : @")
	}
	id, err := ws.Accept([]string{userTag + user}, []byte(user))
	if err != nil {
		return sdk.ErrorJSON(503, "room_full", err.Error())
	}
	if err := ws.SetAutoResponse("ping", "pong"); err != nil {
		return sdk.ErrorJSON(500, "auto_response", err.Error())
	}
	lines, err := recent()
	if err != nil {
		return storageError(err)
	}
	for _, l := range lines {
		if err := ws.Send(id, l); err != nil {
			return sdk.ErrorJSON(500, "send", err.Error())
		}
	}
	if err := say("join", user, ""); err != nil {
		return storageError(err)
	}
	return ws.Accepted()
}

// message says a member's text to the room, or whispers it.
func message(s ws.Socket, msg []byte, binary bool) error {
	user := string(s.Attachment)
	text := strings.TrimSpace(string(msg))
	if binary || text == "" {
		return nil
	}
	if len(text) > maxText {
		return ws.Send(s.ID, line("error", "", "message longer than 2000 bytes"))
	}
	if rest, ok := strings.CutPrefix(text, "/to "); ok {
		to, words, _ := strings.Cut(rest, " ")
		n, err := ws.Broadcast(userTag+to, line("whisper", user, words))
		if err == nil && n == 0 {
			err = ws.Send(s.ID, line("error", "", to+" is not here"))
		}
		return err
	}
	return say("message", user, text)
}

// leave tells the room a member's socket closed.
func leave(s ws.Socket, code int, reason string, clean bool) error {
	return say("leave", string(s.Attachment), "")
}

// say stores a line in the room's history and sends it to every member.
// The members get it only once it is durable (the output gate).
func say(kind, user, text string) error {
	l := line(kind, user, text)
	if err := remember(l); err != nil {
		return err
	}
	_, err := ws.Broadcast("", l)
	return err
}

// line is one JSON line of the room.
func line(kind, user, text string) []byte {
	b := sdk.AppendJSONStr([]byte{'{'}, "type", kind)
	if user != "" {
		b = sdk.AppendJSONStr(b, "user", user)
	}
	if text != "" {
		b = sdk.AppendJSONStr(b, "text", text)
	}
	b = sdk.AppendJSONInt(b, "at", time.Now().UnixMilli())
	return append(b, '}')
}

func members(req *sdk.Request) *sdk.Response {
	socks, err := ws.List("")
	if err != nil {
		return sdk.ErrorJSON(500, "list", err.Error())
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "room", sdk.ObjectName(req))
	b = append(sdk.AppendJSONField(b, "members"), '[')
	seen := map[string]bool{}
	for _, s := range socks {
		u := string(s.Attachment)
		if seen[u] {
			continue
		}
		if len(seen) > 0 {
			b = append(b, ',')
		}
		seen[u] = true
		b = sdk.AppendJSONString(b, u)
	}
	return sdk.RawJSON(200, append(b, ']', '}'))
}

func history(req *sdk.Request) *sdk.Response {
	lines, err := recent()
	if err != nil {
		return storageError(err)
	}
	b := []byte{'['}
	for i, l := range lines {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, l...)
	}
	return sdk.RawJSON(200, append(b, ']'))
}

func storageError(err error) *sdk.Response { return sdk.ErrorJSON(500, "storage", err.Error()) }
