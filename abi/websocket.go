package abi

// WebSockets (ABI.md, section 10): an additive part of ABI v1. The host
// owns every socket; a shard accepts an upgrade request with ws_accept,
// sends and closes through the host functions of group GroupWebSocket,
// and receives message, close and error events through the optional
// export ExportWSEvent. A module without that export refuses every
// upgrade (the host answers 501 websocket_unsupported), so modules written
// before it keep working unchanged.

// GroupWebSocket is the binding group of the WebSocket host functions.
// Every namespace grants it.
const GroupWebSocket = "websocket"

// ExportWSEvent is the optional export that receives WebSocket events:
// (ptr i32, len i32) -> i32, the encoded WSEvent written where
// ExportAlloc pointed; 0 = handled, non-zero = the handler failed (logged).
const ExportWSEvent = "edgeshard_ws_event"

// WebSocket host functions (import module ImportModule, group
// GroupWebSocket).
const (
	FnWSAccept          = "ws_accept"            // (tagsp, tagsl, attp, attl) -> i64 socket id
	FnWSSend            = "ws_send"              // (id i64, flags i32, p, l) -> i32
	FnWSBroadcast       = "ws_broadcast"         // (tagp, tagl, flags i32, p, l) -> i64 sockets sent to
	FnWSClose           = "ws_close"             // (id i64, code i32, reasonp, reasonl) -> i32
	FnWSList            = "ws_list"              // (tagp, tagl, buf, cap) -> i64 encoded Sockets
	FnWSSetAttachment   = "ws_set_attachment"    // (id i64, p, l) -> i32
	FnWSSetAutoResponse = "ws_set_auto_response" // (reqp, reql, respp, respl) -> i32
)

// WebSocket event kinds (WSEvent.Kind).
const (
	WSEventMessage uint32 = 1 // a message arrived on the socket
	WSEventClose   uint32 = 2 // the socket is closed; the last event of the socket
	WSEventError   uint32 = 3 // the socket failed; a close event follows
)

// WebSocket flag bits: ws_send and ws_broadcast flags, WSEvent.Flags.
const (
	// WSBinary marks a binary message (else text).
	WSBinary uint32 = 1 << 0
	// WSClean marks a close event of a socket closed by a close handshake
	// (else the connection was lost).
	WSClean uint32 = 1 << 0
	// WSSendFlags are the send flag bits defined; others are refused.
	WSSendFlags = WSBinary
)

// WebSocket limits of ABI v1 (the host's settings add sockets per shard
// and message size).
const (
	MaxWSTags         = 10   // tags of one socket
	MaxWSTagBytes     = 256  // bytes of one tag
	MaxWSAttachment   = 4096 // bytes of a socket's attachment
	MaxWSCloseReason  = 123  // bytes of a close reason (RFC 6455: a control frame's 125 less the code)
	MaxWSAutoResponse = 2048 // bytes of the auto-response request and of its response
)

// WebSocket close codes the host uses.
const (
	WSCloseNormal     = 1000
	WSCloseGoingAway  = 1001 // the host shuts down
	WSCloseAbnormal   = 1006 // the connection was lost without a close frame
	WSCloseTooBig     = 1009 // an incoming message exceeded the host's limit
	WSCloseInternal   = 1011 // the shard could not handle the socket's event
	WSCloseRestart    = 1012 // the shard moved to another host of its POP: reconnect
	WSCloseTryLater   = 1013 // the client reads too slowly: its send queue overflowed
	WSCloseMinPrivate = 3000 // shards may close with 1000 or 3000..4999
	WSCloseMaxPrivate = 4999
)

// WSEvent is one WebSocket event delivered to ExportWSEvent.
type WSEvent struct {
	Kind   uint32
	Socket uint64
	Flags  uint32 // message: WSBinary; close: WSClean
	Code   uint32 // close: the close code (1005 when the peer sent none)
	// Data is the message, the close reason or the error's text.
	Data []byte
	// Tags and Attachment are the socket's, as the shard left them.
	Tags       []string
	Attachment []byte
}

// Socket describes one open socket of a shard (ws_list).
type Socket struct {
	ID         uint64
	Tags       []string
	Attachment []byte
}

// AppendWSEvent appends the encoding of ev to b:
// kind u32, socket u64, flags u32, code u32, data bytes, tags (count u32,
// string each), attachment bytes.
func AppendWSEvent(b []byte, ev *WSEvent) []byte {
	e := Encoder{B: b}
	e.U32(ev.Kind)
	e.U64(ev.Socket)
	e.U32(ev.Flags)
	e.U32(ev.Code)
	e.Bytes(ev.Data)
	encodeStrings(&e, ev.Tags)
	e.Bytes(ev.Attachment)
	return e.B
}

// DecodeWSEvent decodes a WSEvent; Data and Attachment alias b.
func DecodeWSEvent(b []byte) (*WSEvent, error) {
	d := NewDecoder(b)
	ev := &WSEvent{Kind: d.U32(), Socket: d.U64(), Flags: d.U32(), Code: d.U32()}
	ev.Data = d.Bytes()
	ev.Tags = decodeStrings(d)
	ev.Attachment = d.Bytes()
	return ev, d.Done()
}

// AppendSockets appends the encoding of a socket list to b: count u32,
// then per socket id u64, tags (count u32, string each), attachment bytes.
func AppendSockets(b []byte, ss []Socket) []byte {
	e := Encoder{B: b}
	e.U32(uint32(len(ss)))
	for i := range ss {
		e.U64(ss[i].ID)
		encodeStrings(&e, ss[i].Tags)
		e.Bytes(ss[i].Attachment)
	}
	return e.B
}

// DecodeSockets decodes a socket list; attachments alias b.
func DecodeSockets(b []byte) ([]Socket, error) {
	d := NewDecoder(b)
	n := d.Count(16)
	out := make([]Socket, 0, n)
	for i := 0; i < n; i++ {
		s := Socket{ID: d.U64()}
		s.Tags = decodeStrings(d)
		s.Attachment = d.Bytes()
		out = append(out, s)
	}
	return out, d.Done()
}

// Registered here rather than in abi.go's tables so the WebSocket group
// stays one file: FunctionGroups and AllGroups are complete before any
// other package's init runs.
func init() {
	for _, fn := range []string{FnWSAccept, FnWSSend, FnWSBroadcast, FnWSClose, FnWSList, FnWSSetAttachment, FnWSSetAutoResponse} {
		FunctionGroups[fn] = GroupWebSocket
	}
	AllGroups = append(AllGroups, GroupWebSocket)
}
