package wasm

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// WebSocket host functions (group "websocket"): the shard accepts an
// upgrade request, sends to its sockets, lists and closes them, keeps a
// small attachment per socket and an auto-response, through the Env's
// WebSocketEnv side. The host owns the sockets (host/websocket.go);
// these functions check what the ABI fixes (flags, tag and attachment
// sizes, close codes), the Env what the host's settings fix (sockets per
// shard, message size).

// WebSocketEnv is implemented by an Env whose shard may hold WebSockets.
// An Env without it answers ErrnoNotGranted to every function of the
// group. Errors map to errnos as for any Env (call.errno); ErrNoSocket
// answers ErrnoNotFound.
type WebSocketEnv interface {
	// WSAccept accepts the upgrade request of the current fetch event.
	WSAccept(tags []string, attachment []byte) (uint64, error)
	// WSAccepted reports whether the current event accepted its upgrade
	// request: its response may then be 101.
	WSAccepted() bool
	// WSSend queues a message to one socket; it leaves once the event's
	// writes are durable.
	WSSend(id uint64, binary bool, data []byte) error
	// WSBroadcast queues a message to every socket with tag ("": all)
	// and returns how many.
	WSBroadcast(tag string, binary bool, data []byte) (int, error)
	// WSClose closes one socket with a code and reason.
	WSClose(id uint64, code int, reason string) error
	// WSList returns the shard's sockets with tag ("": all).
	WSList(tag string) ([]abi.Socket, error)
	// WSSetAttachment replaces a socket's attachment.
	WSSetAttachment(id uint64, attachment []byte) error
	// WSSetAutoResponse sets (or, with an empty request, removes) the
	// shard's auto-response.
	WSSetAutoResponse(request, response []byte) error
}

// ErrNoSocket is returned by a WebSocketEnv for a socket id the shard
// does not hold (never accepted, or closed since).
var ErrNoSocket = errors.New("no such socket")

// wsFuncs are the host functions of group "websocket".
var wsFuncs = []hostFunc{wsAccept, wsSend, wsBroadcast, wsClose, wsList, wsSetAttachment, wsSetAutoResponse}

// wsFunc is the body of a function of the group: it answers
// ErrnoNotGranted for an Env that cannot hold WebSockets, else runs fn
// with the Env's WebSocketEnv side.
func wsFunc(fn func(c *call, w WebSocketEnv, mod api.Module, s []uint64)) func(*call, api.Module, []uint64) {
	return func(c *call, mod api.Module, s []uint64) {
		w, ok := c.env.(WebSocketEnv)
		if !ok {
			c.fail(s, abi.ErrnoNotGranted, "this shard cannot hold WebSockets")
			return
		}
		fn(c, w, mod, s)
	}
}

// wsAnswer answers v, or the errno of err (ErrNoSocket: ErrnoNotFound).
func (c *call) wsAnswer(s []uint64, v uint64, err error) {
	switch {
	case errors.Is(err, ErrNoSocket):
		c.fail(s, abi.ErrnoNotFound, err.Error())
	case err != nil:
		c.answer(s, err)
	default:
		s[0] = v
	}
}

// wsAccept is ws_accept(tags_ptr, tags_len, att_ptr, att_len) -> i64:
// accepts the WebSocket upgrade request the current fetch event carries.
// The fetch handler then answers status 101 to complete the handshake
// (any other status refuses it and the socket is dropped).
//
// Parameters:
//   - tags_ptr, tags_len: the socket's tags, encoded Keys (at most
//     abi.MaxWSTags, each 1..abi.MaxWSTagBytes bytes);
//   - att_ptr, att_len: the socket's attachment, at most
//     abi.MaxWSAttachment bytes.
//
// Result: the socket's id (> 0). Errnos: ErrnoInvalid when the event is
// not a fetch of an upgrade request, accepted it already, or the tags do
// not decode; ErrnoTooLarge for too many or too long tags or attachment;
// ErrnoLimit when the shard holds the most sockets the host allows;
// ErrnoFault.
var wsAccept = hostFunc{abi.FnWSAccept, wsAcceptFn, p(i32, i32, i32, i32), p(i64)}

var wsAcceptFn = wsFunc(func(c *call, w WebSocketEnv, mod api.Module, s []uint64) {
	rawTags, ok := c.boundedArg(mod, s, 0, 4+abi.MaxWSTags*(4+abi.MaxWSTagBytes), "encoded tags")
	if !ok {
		return
	}
	att, ok := c.boundedArg(mod, s, 2, abi.MaxWSAttachment, "attachment")
	if !ok {
		return
	}
	var tags []string
	if len(rawTags) > 0 {
		var err error
		if tags, err = abi.DecodeKeys(rawTags); c.invalid(s, err) {
			return
		}
	}
	if !c.checkTags(s, tags) {
		return
	}
	id, err := w.WSAccept(tags, bytes.Clone(att))
	c.wsAnswer(s, id, err)
})

// checkTags answers ErrnoTooLarge or ErrnoInvalid for tags the ABI does
// not allow.
func (c *call) checkTags(s []uint64, tags []string) bool {
	if len(tags) > abi.MaxWSTags {
		c.tooLarge(s, "%d tags exceed %d", len(tags), abi.MaxWSTags)
		return false
	}
	for _, t := range tags {
		switch {
		case t == "":
			c.fail(s, abi.ErrnoInvalid, "empty tag")
			return false
		case len(t) > abi.MaxWSTagBytes:
			c.tooLarge(s, "tag of %d bytes exceeds %d", len(t), abi.MaxWSTagBytes)
			return false
		}
	}
	return true
}

// wsFlags answers ErrnoInvalid for send flags the ABI does not define.
func (c *call) wsFlags(s []uint64, flags uint32) bool {
	if flags&^abi.WSSendFlags != 0 {
		c.fail(s, abi.ErrnoInvalid, fmt.Sprintf("send flags %#x: bits %#x are not defined", flags, flags&^abi.WSSendFlags))
		return false
	}
	return true
}

// wsSend is ws_send(id i64, flags i32, ptr, len) -> i32: queues a
// message to one socket. It leaves once the event's writes are durable
// (it never leaves if they fail).
//
// Parameters:
//   - id: the socket;
//   - flags: abi.WSBinary for a binary message, else text; other bits
//     ErrnoInvalid;
//   - ptr, len: the message.
//
// Result: 0. Errnos: ErrnoNotFound for a socket the shard does not hold;
// ErrnoTooLarge past the host's message size; ErrnoFault.
var wsSend = hostFunc{abi.FnWSSend, wsSendFn, p(i64, i32, i32, i32), p(i32)}

var wsSendFn = wsFunc(func(c *call, w WebSocketEnv, mod api.Module, s []uint64) {
	if !c.wsFlags(s, u32(s[1])) {
		return
	}
	if data, ok := arg(mod, s, 2); ok {
		c.wsAnswer(s, 0, w.WSSend(s[0], u32(s[1])&abi.WSBinary != 0, data))
	}
})

// wsBroadcast is ws_broadcast(tag_ptr, tag_len, flags i32, ptr, len) ->
// i64: queues a message to every socket of the shard that has the tag,
// or to all with an empty tag.
//
// Result: the number of sockets. Errnos: as ws_send's, and ErrnoTooLarge
// for a tag over abi.MaxWSTagBytes.
var wsBroadcast = hostFunc{abi.FnWSBroadcast, wsBroadcastFn, p(i32, i32, i32, i32, i32), p(i64)}

var wsBroadcastFn = wsFunc(func(c *call, w WebSocketEnv, mod api.Module, s []uint64) {
	if !c.wsFlags(s, u32(s[2])) {
		return
	}
	tag, ok := c.boundedArg(mod, s, 0, abi.MaxWSTagBytes, "tag")
	if !ok {
		return
	}
	if data, ok := arg(mod, s, 3); ok {
		n, err := w.WSBroadcast(string(tag), u32(s[2])&abi.WSBinary != 0, data)
		c.wsAnswer(s, uint64(n), err)
	}
})

// wsClose is ws_close(id i64, code i32, reason_ptr, reason_len) -> i32:
// closes a socket once the event's writes are durable. The shard gets its
// close event like any other.
//
// Parameters:
//   - code: 1000, or 3000..4999 (ErrnoInvalid otherwise);
//   - reason: at most abi.MaxWSCloseReason bytes (ErrnoTooLarge).
//
// Result: 0. Errnos: ErrnoNotFound, ErrnoFault.
var wsClose = hostFunc{abi.FnWSClose, wsCloseFn, p(i64, i32, i32, i32), p(i32)}

var wsCloseFn = wsFunc(func(c *call, w WebSocketEnv, mod api.Module, s []uint64) {
	code := int32(u32(s[1]))
	if code != abi.WSCloseNormal && (code < abi.WSCloseMinPrivate || code > abi.WSCloseMaxPrivate) {
		c.fail(s, abi.ErrnoInvalid, fmt.Sprintf("close code %d: a shard closes with %d or %d..%d", code, abi.WSCloseNormal, abi.WSCloseMinPrivate, abi.WSCloseMaxPrivate))
		return
	}
	if reason, ok := c.boundedArg(mod, s, 2, abi.MaxWSCloseReason, "close reason"); ok {
		c.wsAnswer(s, 0, w.WSClose(s[0], int(code), string(reason)))
	}
})

// wsList is ws_list(tag_ptr, tag_len, buf, cap) -> i64: the shard's
// sockets that have the tag (all with an empty tag), with their tags and
// attachments, encoded Sockets, in the order they were accepted.
//
// Result: the encoding's length (held for result_take past cap). Errnos:
// ErrnoTooLarge for a tag over abi.MaxWSTagBytes, ErrnoFault.
var wsList = hostFunc{abi.FnWSList, wsListFn, p(i32, i32, i32, i32), p(i64)}

var wsListFn = wsFunc(func(c *call, w WebSocketEnv, mod api.Module, s []uint64) {
	tag, ok := c.boundedArg(mod, s, 0, abi.MaxWSTagBytes, "tag")
	if !ok {
		return
	}
	socks, err := w.WSList(string(tag))
	if err != nil {
		c.wsAnswer(s, 0, err)
		return
	}
	s[0] = c.reply(mod, abi.AppendSockets(nil, socks), u32(s[2]), u32(s[3]))
})

// wsSetAttachment is ws_set_attachment(id i64, ptr, len) -> i32: replaces
// the socket's attachment (at most abi.MaxWSAttachment bytes), which
// every later event of the socket carries, across hibernation.
//
// Result: 0. Errnos: ErrnoNotFound, ErrnoTooLarge, ErrnoFault.
var wsSetAttachment = hostFunc{abi.FnWSSetAttachment, wsSetAttachmentFn, p(i64, i32, i32), p(i32)}

var wsSetAttachmentFn = wsFunc(func(c *call, w WebSocketEnv, mod api.Module, s []uint64) {
	if att, ok := c.boundedArg(mod, s, 1, abi.MaxWSAttachment, "attachment"); ok {
		c.wsAnswer(s, 0, w.WSSetAttachment(s[0], bytes.Clone(att)))
	}
})

// wsSetAutoResponse is ws_set_auto_response(req_ptr, req_len, resp_ptr,
// resp_len) -> i32: from now on a text message equal to the request, on
// any socket of the shard, is answered with the response by the host
// itself, without an event (the instance may stay evicted). An empty
// request removes it.
//
// Result: 0. Errnos: ErrnoTooLarge past abi.MaxWSAutoResponse bytes;
// ErrnoInvalid for a response without a request; ErrnoFault.
var wsSetAutoResponse = hostFunc{abi.FnWSSetAutoResponse, wsSetAutoResponseFn, p(i32, i32, i32, i32), p(i32)}

var wsSetAutoResponseFn = wsFunc(func(c *call, w WebSocketEnv, mod api.Module, s []uint64) {
	req, ok := c.boundedArg(mod, s, 0, abi.MaxWSAutoResponse, "auto-response request")
	if !ok {
		return
	}
	resp, ok := c.boundedArg(mod, s, 2, abi.MaxWSAutoResponse, "auto-response")
	if !ok {
		return
	}
	if len(req) == 0 && len(resp) > 0 {
		c.fail(s, abi.ErrnoInvalid, "an auto-response needs a request")
		return
	}
	c.wsAnswer(s, 0, w.WSSetAutoResponse(bytes.Clone(req), bytes.Clone(resp)))
})
