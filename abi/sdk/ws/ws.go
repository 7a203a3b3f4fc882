// Package ws is the WebSocket side of the Go guest SDK (abi/ABI.md,
// section 10). Importing it makes the plugin export edgeshard_ws_event,
// so the host offers it WebSocket upgrade requests; a plugin that does
// not import it refuses every upgrade (the host answers 501).
//
// The host owns the sockets. A fetch handler accepts an upgrade request
// with Accept and answers Accepted(); from then on the shard gets the
// socket's messages, its close and its errors through the Handlers given
// to Serve, one event at a time like its requests and alarms. The shard
// may be evicted between events while its sockets stay open
// (hibernation): keep what a socket's next event needs in its tags and
// attachment, or in storage, never only in memory.
//
//	func init() {
//		sdk.Serve(sdk.Handlers{Fetch: fetch})
//		ws.Serve(ws.Handlers{Message: message, Close: closed})
//	}
//
//	func fetch(req *sdk.Request) *sdk.Response {
//		if !ws.IsUpgrade(req) {
//			return sdk.Text(426, "connect with a WebSocket")
//		}
//		if _, err := ws.Accept([]string{"room:lobby"}, []byte("ann")); err != nil {
//			return sdk.ErrorJSON(503, "busy", err.Error())
//		}
//		return ws.Accepted()
//	}
//
// What an event does to sockets — sends, closes, attachments, the
// auto-response — takes effect when the event ends, and its messages
// leave once the event's storage writes are durable.
package ws

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/abi/sdk/internal/guestmem"
)

// Socket is one of the shard's sockets as an event or List sees it.
type Socket struct {
	ID         uint64
	Tags       []string
	Attachment []byte
}

// HasTag reports whether the socket has tag.
func (s Socket) HasTag(tag string) bool {
	for _, t := range s.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// Handlers receive the shard's WebSocket events. A non-nil error is
// logged by the host; the socket stays open (close it to end it).
type Handlers struct {
	// Message handles one message; binary is false for a text message.
	Message func(s Socket, msg []byte, binary bool) error
	// Close is the socket's last event: the client or the shard closed it
	// (clean, with the code and reason of the close handshake) or the
	// connection was lost (not clean, code 1006). Every accepted socket
	// gets one, except when the host shuts down.
	Close func(s Socket, code int, reason string, clean bool) error
	// Error reports why the host is closing the socket (a message over
	// its limit, a client too slow to read, a failed handshake); the close
	// follows.
	Error func(s Socket, msg string) error
}

var handlers Handlers

// Serve registers the WebSocket handlers. Call it from an init function,
// beside sdk.Serve.
func Serve(h Handlers) { handlers = h }

// IsUpgrade reports whether req asks to become a WebSocket.
func IsUpgrade(req *sdk.Request) bool {
	return strings.EqualFold(sdk.GetHeader(req.Header, "Upgrade"), "websocket")
}

// Accept accepts the upgrade request the current fetch handler serves,
// with the socket's tags (at most 10 of 1..256 bytes) and attachment (at
// most 4 KiB). The handler must then return Accepted(); any other
// response refuses the upgrade after all.
func Accept(tags []string, attachment []byte) (uint64, error) {
	enc := abi.AppendKeys(nil, tags)
	r := hostWSAccept(guestmem.Bytes(enc), uint32(len(enc)), guestmem.Bytes(attachment), uint32(len(attachment)))
	if r < 0 {
		return 0, hostError("ws.accept", abi.Errno(-r))
	}
	return uint64(r), nil
}

// Accepted is the response that completes an accepted upgrade: 101.
// headers may name the subprotocol chosen (Sec-WebSocket-Protocol).
func Accepted(headers ...sdk.Header) *sdk.Response {
	return &sdk.Response{Status: 101, Header: headers}
}

// Send sends a text message to one socket.
func Send(id uint64, msg []byte) error { return send(id, 0, msg) }

// SendBinary sends a binary message to one socket.
func SendBinary(id uint64, msg []byte) error { return send(id, abi.WSBinary, msg) }

func send(id uint64, flags uint32, msg []byte) error {
	return errnoErr("ws.send", hostWSSend(int64(id), flags, guestmem.Bytes(msg), uint32(len(msg))))
}

// Broadcast sends a text message to every socket of the shard with tag
// ("" for all) and returns how many.
func Broadcast(tag string, msg []byte) (int, error) {
	r := hostWSBroadcast(guestmem.String(tag), uint32(len(tag)), 0, guestmem.Bytes(msg), uint32(len(msg)))
	if r < 0 {
		return 0, hostError("ws.broadcast", abi.Errno(-r))
	}
	return int(r), nil
}

// Close closes a socket with code 1000 or 3000..4999 and a reason of at
// most 123 bytes. Its Close event follows.
func Close(id uint64, code int, reason string) error {
	return errnoErr("ws.close", hostWSClose(int64(id), int32(code), guestmem.String(reason), uint32(len(reason))))
}

// List returns the shard's open sockets with tag ("" for all), in the
// order they were accepted, with their tags and attachments.
func List(tag string) ([]Socket, error) {
	if cap(scratch) == 0 {
		scratch = make([]byte, 4096)
	}
	r := hostWSList(guestmem.String(tag), uint32(len(tag)), guestmem.Bytes(scratch), uint32(len(scratch)))
	if r < 0 {
		return nil, hostError("ws.list", abi.Errno(-r))
	}
	if int(r) > len(scratch) {
		scratch = make([]byte, int(r)+int(r)/4)
		if r = hostResultTake(guestmem.Bytes(scratch), uint32(len(scratch))); r < 0 {
			return nil, hostError("ws.list", abi.Errno(-r))
		}
	}
	socks, err := abi.DecodeSockets(scratch[:r])
	if err != nil {
		return nil, fmt.Errorf("ws.list: %w", err)
	}
	out := make([]Socket, len(socks))
	for i, s := range socks {
		out[i] = Socket{ID: s.ID, Tags: s.Tags, Attachment: append([]byte(nil), s.Attachment...)}
	}
	return out, nil
}

// SetAttachment replaces a socket's attachment (at most 4 KiB): every
// later event of the socket carries it, across hibernation.
func SetAttachment(id uint64, attachment []byte) error {
	return errnoErr("ws.set_attachment", hostWSSetAttachment(int64(id), guestmem.Bytes(attachment), uint32(len(attachment))))
}

// SetAutoResponse makes the host answer a text message equal to request,
// on any socket of the shard, with response, without an event: the
// shard is not woken (a ping/pong keepalive). An empty request removes
// it. It lasts until changed or the host stops.
func SetAutoResponse(request, response string) error {
	return errnoErr("ws.set_auto_response", hostWSSetAutoResponse(guestmem.String(request), uint32(len(request)), guestmem.String(response), uint32(len(response))))
}

// scratch receives ws_list results.
var scratch []byte

// events counts events, for the scheduler yields (sdk's yieldEvery).
var events uint32

// handle runs one encoded event: 0 handled, 1 the handler failed.
func handle(in []byte) int32 {
	events++
	if events%8 == 0 {
		runtime.Gosched() // let the garbage collector finish (abi/ABI.md, section 8)
	}
	ev, err := abi.DecodeWSEvent(in)
	if err != nil {
		sdk.Log(abi.LogError, "ws: malformed event", "error", err.Error())
		return 1
	}
	s := Socket{ID: ev.Socket, Tags: ev.Tags, Attachment: append([]byte(nil), ev.Attachment...)}
	switch ev.Kind {
	case abi.WSEventMessage:
		if handlers.Message != nil {
			err = handlers.Message(s, append([]byte(nil), ev.Data...), ev.Flags&abi.WSBinary != 0)
		}
	case abi.WSEventClose:
		if handlers.Close != nil {
			err = handlers.Close(s, int(ev.Code), string(ev.Data), ev.Flags&abi.WSClean != 0)
		}
	case abi.WSEventError:
		if handlers.Error != nil {
			err = handlers.Error(s, string(ev.Data))
		}
	}
	if err != nil {
		sdk.Log(abi.LogError, "ws: handler failed", "error", err.Error())
		return 1
	}
	return 0
}

func errnoErr(op string, r int32) error {
	if r >= 0 {
		return nil
	}
	return hostError(op, abi.Errno(-r))
}

// hostError is the sdk's HostError for a failed call, with the host's
// message.
func hostError(op string, e abi.Errno) error {
	err := &sdk.HostError{Errno: e, Op: op}
	var buf [1024]byte
	if n := hostErrorMessage(unsafe.Pointer(&buf[0]), uint32(len(buf))); n > 0 && n <= int64(len(buf)) {
		err.Message = string(buf[:n])
	}
	return err
}
