package host

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/gorilla/websocket"
)

// upgrader completes the handshakes shards accept. The host checks no
// Origin: the shard sees the request's Origin header and refuses what it
// does not want. Write buffers come from a pool, so an idle socket holds
// none; each socket reads through a buffer of wsReadBuffer bytes of its
// own (net/http's 4 KiB one would be kept otherwise).
var upgrader = websocket.Upgrader{
	CheckOrigin:     func(*http.Request) bool { return true },
	ReadBufferSize:  wsReadBuffer,
	WriteBufferPool: &sync.Pool{},
	Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
		httpx.WriteError(w, status, "bad_upgrade", reason.Error())
	},
}

// wsReadBuffer is each socket's read buffer: messages of any size pass
// through it; an idle socket of a hibernating shard holds it all the same
// (docs/BENCHMARKS.md, ws_idle_mem).
const wsReadBuffer = 1024

// serveUpgrade offers a WebSocket upgrade request at /do to its shard as
// a fetch (the request keeps its Upgrade header). A shard that calls
// ws_accept and answers 101 gets the socket; any other answer is sent as
// it is, and the client stays on HTTP. A module without the WebSocket
// export refuses every upgrade: 501 websocket_unsupported.
func (h *Host) serveUpgrade(w http.ResponseWriter, r *http.Request, binding, key, rest string) {
	ns, ok := h.namespace(binding)
	switch {
	case !ok:
		httpx.WriteError(w, http.StatusNotFound, "unknown_binding", fmt.Sprintf("%v %q", ErrUnknownBinding, binding))
		return
	case !ns.acceptsWebSockets():
		httpx.WriteError(w, http.StatusNotImplemented, "websocket_unsupported",
			fmt.Sprintf("binding %q does not accept WebSockets: its module exports no %s (abi/ABI.md, section 10)", binding, abi.ExportWSEvent))
		return
	case r.Method != http.MethodGet:
		httpx.WriteError(w, http.StatusMethodNotAllowed, "bad_upgrade", "a WebSocket upgrade is a GET request")
		return
	case r.Header.Get("Sec-Websocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		httpx.WriteError(w, http.StatusUpgradeRequired, "bad_upgrade", "unsupported Sec-WebSocket-Version: this host speaks 13 (RFC 6455)")
		return
	case r.Header.Get("Sec-Websocket-Key") == "":
		httpx.WriteError(w, http.StatusBadRequest, "bad_upgrade", "missing Sec-WebSocket-Key")
		return
	}
	shard, err := ns.ShardFor(key)
	if err != nil {
		h.writeFetchError(w, binding, key, err)
		return
	}
	req := &abi.Request{Method: r.Method, Path: rest, Header: requestHeader(r)}
	upgrade := func() *event { return &event{kind: evFetch, req: req, upgrade: true, done: make(chan result, 1)} }
	var res result
	if h.cfg.Placement != nil {
		// Accepted under a claim only, never a second instance: a shard
		// owned elsewhere has its upgrade carried to its owner, or, where
		// that cannot be, is 421 shard_elsewhere naming it.
		res, err = ns.fetchPlaced(r.Context(), shard, upgrade, false)
		var ee *ElsewhereError
		if uf, ok := h.cfg.Placement.(UpgradeForwarder); ok && errors.As(err, &ee) && uf.ForwardUpgrade(w, r, ee.Owner) {
			return
		}
	} else {
		res, err = ns.fetchEvent(r.Context(), shard, upgrade(), nil)
	}
	if err != nil {
		if res.sock != nil {
			h.ws.remove(res.sock) // its event's writes never became durable
		}
		h.writeFetchError(w, binding, key, err)
		return
	}
	if res.sock == nil {
		writeResponse(w, res.resp)
		return
	}
	hdr := http.Header{}
	for _, hd := range res.resp.Header {
		if hopByHop(hd.Name) || handshakeHeader(hd.Name) || strings.ContainsAny(hd.Value, "\x00\r\n") {
			continue
		}
		hdr.Add(hd.Name, hd.Value)
	}
	conn, err := upgrader.Upgrade(w, r, hdr)
	if err != nil {
		// Upgrade answered the client; the shard learns the socket is gone.
		res.sock.finish(abi.WSCloseAbnormal, "", false, "handshake failed: "+err.Error())
		return
	}
	res.sock.open(conn)
}

// UpgradeForwarder is a Placement that carries a WebSocket upgrade for a
// shard owned elsewhere to its owner (the cluster's: the connection is
// relayed both ways, the socket is the owner's). ForwardUpgrade answers
// the client and returns true, or returns false having written nothing
// (the request was itself relayed by another host: the host answers 421
// shard_elsewhere rather than relay it again).
type UpgradeForwarder interface {
	ForwardUpgrade(w http.ResponseWriter, r *http.Request, owner string) bool
}

// handshakeHeader reports headers of the handshake the host writes
// itself (Sec-WebSocket-Protocol passes: the shard picks the protocol).
func handshakeHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Sec-Websocket-Accept", "Sec-Websocket-Extensions", "Sec-Websocket-Key", "Sec-Websocket-Version":
		return true
	}
	return false
}
