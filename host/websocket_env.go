package host

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/gorilla/websocket"
)

// The actor's side of WebSockets: the guest's ws_* host functions
// (wasm.WebSocketEnv) and the evWS event. What an event does to its
// sockets — sends, closes, attachments, the auto-response — applies when
// the event commits, and its frames leave once the event's writes are
// durable (the output gate); an event that crashes changes nothing.

// wsEventState is the WebSocket side of the actor's current event.
type wsEventState struct {
	upgrade  bool    // a fetch of an upgrade request: ws_accept may accept it
	accepted *socket // the socket ws_accept registered, pending
	ops      []func(gate *storage.Pending)
	bytes    int // message bytes the event copied (wsEventBytes)
}

// wsEventBytes bounds the message bytes one event may queue (each
// ws_send copies its message, a broadcast one copy for all): they wait in
// the host until the event commits.
const wsEventBytes = 64 << 20

// wsRunner is an instance that may handle WebSocket events.
type wsRunner interface {
	HasWebSockets() bool
	WSEvent(ctx context.Context, env wasm.Env, ev *abi.WSEvent) (bool, error)
}

// errNoWSExport: the module serving the shard does not handle WebSockets
// (it exports no edgeshard_ws_event).
var errNoWSExport = errors.New("the shard's module does not handle WebSockets (it exports no " + abi.ExportWSEvent + ")")

// acceptsWebSockets reports whether the namespace's current module may
// accept WebSocket upgrades.
func (ns *Namespace) acceptsWebSockets() bool {
	v := ns.cur.Load()
	return v != nil && v.mod != nil && v.mod.WebSockets
}

// wsBegin starts the WebSocket side of a fetch event.
func (a *actor) wsBegin(upgrade bool) { a.wsev = wsEventState{upgrade: upgrade} }

// wsFlush applies the event's socket operations once it commits; gate is
// its commit.
func (a *actor) wsFlush(gate *storage.Pending) {
	for _, op := range a.wsev.ops {
		op(gate)
	}
	a.wsev.ops, a.wsev.bytes = nil, 0
}

// wsAbort drops what a crashed event did to sockets, the socket it
// accepted included.
func (a *actor) wsAbort() {
	if s := a.wsev.accepted; s != nil {
		a.ns.h.ws.remove(s)
	}
	a.wsev = wsEventState{}
}

// wsAccepted ends a fetch event: the socket it accepted, if its response
// completes the handshake (101); otherwise the socket is dropped.
func (a *actor) wsAccepted(resp *abi.Response) *socket {
	s := a.wsev.accepted
	a.wsev = wsEventState{}
	if s != nil && resp.Status != 101 {
		a.ns.h.ws.remove(s)
		return nil
	}
	return s
}

// handleWS runs a WebSocket event on the shard's instance.
func (a *actor) handleWS(ev *event) {
	d := ev.ws
	sock := d.sock.describe()
	d.ev.Tags, d.ev.Attachment = sock.Tags, sock.Attachment
	inst, err := a.instance()
	if err != nil {
		ev.done <- result{err: err}
		return
	}
	w, ok := inst.(wsRunner)
	if !ok || !w.HasWebSockets() {
		ev.done <- result{err: errNoWSExport}
		return
	}
	a.resetAlarmChange()
	a.wsev = wsEventState{}
	ctx, cancel := a.eventContext()
	ok, err = w.WSEvent(ctx, a.env(), d.ev)
	cancel()
	if err != nil {
		a.crashed("websocket", err)
		ev.done <- result{err: err}
		return
	}
	if !ok {
		a.log.Warn().Uint64("socket", d.sock.id).Uint32("kind", d.ev.Kind).Msg("websocket handler reported failure")
	}
	if p, ok := a.commitEvent(inst, ev); ok {
		ev.done <- result{pending: p}
	}
}

// sockets returns the calling shard's sockets.
func (a *actor) sockets() *shardSockets { return a.ns.h.ws.lookup(a.ns, a.shard) }

// socket returns the calling shard's socket id, or wasm.ErrNoSocket.
func (a *actor) socket(id uint64) (*socket, error) {
	s, ok := a.sockets().get(id)
	if !ok {
		return nil, fmt.Errorf("%w %d (never accepted by this shard, or closed)", wasm.ErrNoSocket, id)
	}
	return s, nil
}

func wsCallError(e abi.Errno, err error) error { return &wasm.CallError{Errno: e, Err: err} }

// WSAccept implements wasm.WebSocketEnv.
func (a *actor) WSAccept(tags []string, att []byte) (uint64, error) {
	switch {
	case !a.wsev.upgrade:
		return 0, wsCallError(abi.ErrnoInvalid, errors.New("ws_accept outside the fetch of a WebSocket upgrade request"))
	case a.wsev.accepted != nil:
		return 0, wsCallError(abi.ErrnoInvalid, errors.New("the upgrade request is accepted already"))
	}
	s, err := a.ns.h.ws.accept(a.ns, a.shard, tags, att)
	switch {
	case errors.Is(err, errSocketLimit):
		a.limitReached(limitWSSockets, err.Error())
		return 0, wsCallError(abi.ErrnoLimit, fmt.Errorf("%w: %d", err, a.ns.h.cfg.WebSocket.MaxSocketsPerShard))
	case err != nil:
		return 0, err
	}
	a.wsev.accepted = s
	return s.id, nil
}

// limitWSSockets names MaxSocketsPerShard in the limit metrics.
const limitWSSockets = "websocket_max_sockets_per_shard"

// WSAccepted reports whether the current event accepted its upgrade: a
// 101 response then completes the handshake.
func (a *actor) WSAccepted() bool { return a.wsev.accepted != nil }

// checkMessage refuses a message over MaxMessageBytes, or one that would
// take the event past wsEventBytes; otherwise it counts it.
func (a *actor) checkMessage(data []byte) error {
	if max := a.ns.h.cfg.WebSocket.MaxMessageBytes; len(data) > max {
		return wsCallError(abi.ErrnoTooLarge, fmt.Errorf("message of %d bytes exceeds the host's limit of %d (websocket max_message_bytes)", len(data), max))
	}
	if a.wsev.bytes+len(data) > wsEventBytes {
		err := fmt.Errorf("message of %d bytes refused: this event already queued %d bytes of WebSocket messages; one event may queue %d", len(data), a.wsev.bytes, wsEventBytes)
		a.limitReached(limitWSEventBytes, err.Error())
		return wsCallError(abi.ErrnoLimit, err)
	}
	a.wsev.bytes += len(data)
	return nil
}

// limitWSEventBytes names wsEventBytes in the limit metrics.
const limitWSEventBytes = "websocket_event_bytes"

func frameType(binary bool) int {
	if binary {
		return websocket.BinaryMessage
	}
	return websocket.TextMessage
}

// WSSend implements wasm.WebSocketEnv.
func (a *actor) WSSend(id uint64, binary bool, data []byte) error {
	s, err := a.socket(id)
	if err != nil {
		return err
	}
	if err := a.checkMessage(data); err != nil {
		return err
	}
	msg := append([]byte(nil), data...)
	a.wsev.ops = append(a.wsev.ops, func(gate *storage.Pending) {
		s.push(wsOut{gate: gate, typ: frameType(binary), data: msg})
	})
	return nil
}

// WSBroadcast implements wasm.WebSocketEnv: the sockets are those with
// the tag now; one copy of the message serves them all.
func (a *actor) WSBroadcast(tag string, binary bool, data []byte) (int, error) {
	if err := a.checkMessage(data); err != nil {
		return 0, err
	}
	socks := a.sockets().match(tag)
	if len(socks) == 0 {
		return 0, nil
	}
	msg := append([]byte(nil), data...)
	a.wsev.ops = append(a.wsev.ops, func(gate *storage.Pending) {
		for _, s := range socks {
			s.push(wsOut{gate: gate, typ: frameType(binary), data: msg})
		}
	})
	return len(socks), nil
}

// WSClose implements wasm.WebSocketEnv.
func (a *actor) WSClose(id uint64, code int, reason string) error {
	s, err := a.socket(id)
	if err != nil {
		return err
	}
	a.wsev.ops = append(a.wsev.ops, func(gate *storage.Pending) { s.closeBy(code, reason, gate) })
	return nil
}

// WSList implements wasm.WebSocketEnv.
func (a *actor) WSList(tag string) ([]abi.Socket, error) {
	socks := a.sockets().match(tag)
	out := make([]abi.Socket, len(socks))
	for i, s := range socks {
		out[i] = s.describe()
	}
	return out, nil
}

// WSSetAttachment implements wasm.WebSocketEnv.
func (a *actor) WSSetAttachment(id uint64, att []byte) error {
	s, err := a.socket(id)
	if err != nil {
		return err
	}
	a.wsev.ops = append(a.wsev.ops, func(*storage.Pending) { s.setAttachment(att) })
	return nil
}

// WSSetAutoResponse implements wasm.WebSocketEnv.
func (a *actor) WSSetAutoResponse(req, resp []byte) error {
	ns, shard := a.ns, a.shard
	a.wsev.ops = append(a.wsev.ops, func(*storage.Pending) { ns.h.ws.setAuto(ns, shard, req, resp) })
	return nil
}

var _ wasm.WebSocketEnv = shardEnv{}
