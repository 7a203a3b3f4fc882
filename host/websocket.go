package host

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/gorilla/websocket"
)

// WebSockets with hibernation (abi/ABI.md, section 10). The host owns
// every socket: the registry below keeps them per shard, keyed by
// (namespace, shard), with their tags and attachments, outside any
// instance. A shard's instance may be evicted (idle, memory budget, swap)
// while its sockets stay open; the next message is an event like any
// other, queued on the shard's actor, which starts the instance again from
// storage. An auto-response is answered here, by the socket's reader,
// without an event. Sockets stay with the host that accepted them: a
// shard that moves to another host (cluster ownership) leaves them here,
// where ShardSockets and CloseShardSockets reach them.
//
// One socket costs a reader goroutine blocked in Read, the connection's
// 4 KiB read buffer and its registry entry; a writer goroutine exists
// only while messages wait to be written (docs/BENCHMARKS.md, ws_idle).

// WebSocketLimits bound the host's WebSockets. Zero fields take the
// defaults noted.
type WebSocketLimits struct {
	// MaxSocketsPerShard bounds the sockets one shard holds (default
	// 10,000): ws_accept past it answers ErrnoLimit.
	MaxSocketsPerShard int
	// MaxMessageBytes bounds one message either way (default 1 MiB): a
	// client's larger message closes its socket with 1009 (the shard gets
	// an error event, then the close); a shard's larger send answers
	// ErrnoTooLarge.
	MaxMessageBytes int
	// SendQueueBytes bounds the bytes waiting to be written to one socket
	// (default 4 MiB): past it the client reads too slowly and its socket
	// is closed with 1013.
	SendQueueBytes int
	// WriteTimeout bounds one write to a socket (default 10 s); past it
	// the socket is closed.
	WriteTimeout time.Duration
}

func (l WebSocketLimits) withDefaults() WebSocketLimits {
	if l.MaxSocketsPerShard <= 0 {
		l.MaxSocketsPerShard = 10_000
	}
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = 1 << 20
	}
	if l.SendQueueBytes <= 0 {
		l.SendQueueBytes = 4 << 20
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = 10 * time.Second
	}
	// One message always fits an empty queue.
	l.SendQueueBytes = max(l.SendQueueBytes, l.MaxMessageBytes)
	return l
}

// wsCloseWait is how long a socket the shard closed waits for the
// client's close frame before the host drops the connection.
const wsCloseWait = 5 * time.Second

// wsRegistry holds the host's sockets by shard. Lock order: mu, then a
// shardSockets' mu, then a socket's omu.
type wsRegistry struct {
	mu     sync.Mutex
	shards map[storage.ShardID]*shardSockets
	closed bool
	nextID atomic.Uint64
}

// shardSockets are one shard's sockets and its auto-response.
type shardSockets struct {
	ns    *Namespace
	shard string
	mu    sync.Mutex
	socks map[uint64]*socket
	auto  atomic.Pointer[autoResponse]
}

// autoResponse answers a text message equal to req with resp.
type autoResponse struct{ req, resp string }

// Socket states (socket.state, guarded by its shard's mu).
const (
	wsPending = iota // accepted by the shard, handshake not done
	wsOpen           // handshake done
	wsClosing        // the shard closed it; waiting for the client's close
)

// socket is one WebSocket the host holds for a shard.
type socket struct {
	id uint64
	ss *shardSockets
	h  *Host

	// Guarded by ss.mu.
	tags  []string
	att   []byte
	state int

	conn     atomic.Pointer[websocket.Conn] // set once by open
	finished atomic.Bool                    // removed from the registry; its close is delivered

	// The send queue, guarded by omu. A writer goroutine runs only while
	// it is not empty.
	omu       sync.Mutex
	queue     []wsOut
	queued    int
	writing   bool
	stopped   bool // no more writes
	closeCode int  // the code of the close frame the shard sent, once sent
	closeText string
	failCode  int // the host's reason to fail the socket (fail), once known
	failText  string
}

// wsOut is one frame to write once gate (the commit of the event that
// sent it) is durable; it is dropped if that commit fails.
type wsOut struct {
	gate   *storage.Pending
	typ    int // websocket.TextMessage, BinaryMessage or CloseMessage
	data   []byte
	code   int // CloseMessage
	reason string
}

// errSocketLimit is ws_accept past MaxSocketsPerShard.
var errSocketLimit = errors.New("the shard holds the most sockets the host allows (websocket max_sockets_per_shard)")

// shardOf returns the sockets of (ns, shard), created when create is set
// and the registry is open; nil otherwise. Called with r.mu.
func (r *wsRegistry) shardOf(ns *Namespace, shard string, create bool) *shardSockets {
	id := ns.shardID(shard)
	ss := r.shards[id]
	if ss == nil && create && !r.closed {
		if r.shards == nil {
			r.shards = map[storage.ShardID]*shardSockets{}
		}
		ss = &shardSockets{ns: ns, shard: shard, socks: map[uint64]*socket{}}
		r.shards[id] = ss
	}
	return ss
}

// lookup returns the sockets of (ns, shard), or nil.
func (r *wsRegistry) lookup(ns *Namespace, shard string) *shardSockets {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.shardOf(ns, shard, false)
}

// accept registers a pending socket of (ns, shard).
func (r *wsRegistry) accept(ns *Namespace, shard string, tags []string, att []byte) (*socket, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ss := r.shardOf(ns, shard, true)
	if ss == nil {
		return nil, ErrClosed
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.socks) >= ns.h.cfg.WebSocket.MaxSocketsPerShard {
		return nil, errSocketLimit
	}
	s := &socket{id: r.nextID.Add(1), ss: ss, h: ns.h, tags: tags, att: att}
	ss.socks[s.id] = s
	return s, nil
}

// remove takes s out of the registry; false if it was not in it. The
// shard's entry goes when it holds no socket and no auto-response.
func (r *wsRegistry) remove(s *socket) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ss := s.ss
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.socks[s.id] != s {
		return false
	}
	delete(ss.socks, s.id)
	r.dropIfEmpty(ss)
	return true
}

// dropShard closes every socket of a shard that leaves this host with
// code and reason, with no close event for the shard (it no longer runs
// here: as on the host's shutdown), and returns how many it closed.
func (r *wsRegistry) dropShard(ns *Namespace, shard string, code int, reason string) int {
	n := 0
	for _, s := range r.lookup(ns, shard).match("") {
		if r.remove(s) && !s.finished.Swap(true) {
			s.stop(code, reason)
			n++
		}
	}
	return n
}

// dropIfEmpty removes an entry without sockets or auto-response. Called
// with r.mu and ss.mu.
func (r *wsRegistry) dropIfEmpty(ss *shardSockets) {
	if len(ss.socks) == 0 && ss.auto.Load() == nil {
		id := ss.ns.shardID(ss.shard)
		if r.shards[id] == ss {
			delete(r.shards, id)
		}
	}
}

// setAuto sets or (empty req) removes the auto-response of (ns, shard).
func (r *wsRegistry) setAuto(ns *Namespace, shard string, req, resp []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ss := r.shardOf(ns, shard, len(req) > 0)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(req) == 0 {
		ss.auto.Store(nil)
		r.dropIfEmpty(ss)
		return
	}
	ss.auto.Store(&autoResponse{req: string(req), resp: string(resp)})
}

// closeAll closes every socket with 1001 (going away) and no event: the
// host is stopping.
func (r *wsRegistry) closeAll() {
	r.mu.Lock()
	r.closed = true
	var all []*socket
	for _, ss := range r.shards {
		ss.mu.Lock()
		for _, s := range ss.socks {
			all = append(all, s)
		}
		ss.mu.Unlock()
	}
	r.shards = nil
	r.mu.Unlock()
	for _, s := range all {
		s.finished.Store(true)
		s.stop(abi.WSCloseGoingAway, "host shutting down")
	}
}

// get returns the shard's socket id if it may still be sent to (pending
// or open, not closing).
func (ss *shardSockets) get(id uint64) (*socket, bool) {
	if ss == nil {
		return nil, false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.socks[id]
	if !ok || s.state == wsClosing {
		return nil, false
	}
	return s, true
}

// match returns the shard's sockets that may be sent to and have tag
// ("": all), in the order they were accepted.
func (ss *shardSockets) match(tag string) []*socket {
	if ss == nil {
		return nil
	}
	ss.mu.Lock()
	out := make([]*socket, 0, len(ss.socks))
	for _, s := range ss.socks {
		if s.state != wsClosing && (tag == "" || slices.Contains(s.tags, tag)) {
			out = append(out, s)
		}
	}
	ss.mu.Unlock()
	slices.SortFunc(out, func(a, b *socket) int { return int(a.id - b.id) })
	return out
}

// describe returns what the shard knows of s: its tags and attachment.
func (s *socket) describe() abi.Socket {
	s.ss.mu.Lock()
	defer s.ss.mu.Unlock()
	return abi.Socket{ID: s.id, Tags: s.tags, Attachment: s.att}
}

func (s *socket) setAttachment(att []byte) {
	s.ss.mu.Lock()
	s.att = att
	s.ss.mu.Unlock()
}

// open completes the handshake: the socket reads and writes from now on.
func (s *socket) open(conn *websocket.Conn) {
	conn.SetReadLimit(int64(s.h.cfg.WebSocket.MaxMessageBytes))
	s.ss.mu.Lock()
	s.conn.Store(conn)
	if s.state == wsPending {
		s.state = wsOpen
	}
	s.ss.mu.Unlock()
	if s.finished.Load() { // the host closed meanwhile
		s.stop(abi.WSCloseGoingAway, "host shutting down")
		return
	}
	s.omu.Lock()
	start := len(s.queue) > 0 && !s.writing && !s.stopped
	s.writing = s.writing || start
	s.omu.Unlock()
	if start {
		go s.writeLoop()
	}
	go s.readLoop()
}

// push queues a frame; a socket whose queue would pass SendQueueBytes is
// closed (1013: the client reads too slowly).
func (s *socket) push(o wsOut) {
	s.omu.Lock()
	if s.stopped {
		s.omu.Unlock()
		return
	}
	if s.queued+len(o.data) > s.h.cfg.WebSocket.SendQueueBytes {
		s.omu.Unlock()
		go s.fail(abi.WSCloseTryLater, "send queue overflow: the client reads too slowly")
		return
	}
	s.queue = append(s.queue, o)
	s.queued += len(o.data)
	start := s.conn.Load() != nil && !s.writing
	s.writing = s.writing || start
	s.omu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// writeLoop writes queued frames in order, each once its event's writes
// are durable, and ends when the queue is empty.
func (s *socket) writeLoop() {
	conn := s.conn.Load()
	for {
		s.omu.Lock()
		if len(s.queue) == 0 || s.stopped {
			s.queue, s.writing = nil, false
			s.omu.Unlock()
			return
		}
		o := s.queue[0]
		s.queue[0] = wsOut{}
		s.queue = s.queue[1:]
		s.queued -= len(o.data)
		s.omu.Unlock()
		if err := o.gate.Wait(context.Background()); err != nil {
			continue // the event that sent it never happened
		}
		conn.SetWriteDeadline(time.Now().Add(s.h.cfg.WebSocket.WriteTimeout))
		var err error
		if o.typ == websocket.CloseMessage {
			s.omu.Lock()
			s.closeCode, s.closeText = o.code, o.reason
			s.omu.Unlock()
			err = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(o.code, o.reason))
			conn.SetReadDeadline(time.Now().Add(wsCloseWait))
		} else {
			err = conn.WriteMessage(o.typ, o.data)
		}
		if err != nil {
			conn.Close() // the reader sees it and finishes the socket
		}
	}
}

// closeBy is ws_close, applied when the shard's event ends: no more
// sends; the close frame leaves once the event is durable.
func (s *socket) closeBy(code int, reason string, gate *storage.Pending) {
	s.ss.mu.Lock()
	if s.state == wsClosing {
		s.ss.mu.Unlock()
		return
	}
	s.state = wsClosing
	s.ss.mu.Unlock()
	s.push(wsOut{gate: gate, typ: websocket.CloseMessage, code: code, reason: reason})
}

// stop ends the connection at once with a close frame (best effort); no
// more writes. The reader, if any, then fails and finishes the socket.
func (s *socket) stop(code int, reason string) {
	s.omu.Lock()
	s.stopped = true
	s.queue, s.queued = nil, 0
	s.omu.Unlock()
	if conn := s.conn.Load(); conn != nil {
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		conn.Close()
	}
}

// fail closes the socket for a reason of the host's (code 1011, 1013…):
// the shard gets an error event with reason, then the close.
func (s *socket) fail(code int, reason string) {
	s.omu.Lock()
	if s.failCode == 0 {
		s.failCode, s.failText = code, reason
	}
	s.omu.Unlock()
	s.stop(code, reason)
	s.finish(code, reason, false, reason)
}

// readLoop reads the client's messages: an auto-response is answered
// here; any other message is an event of the shard, one at a time, in
// order. It ends with the connection and finishes the socket.
func (s *socket) readLoop() {
	conn := s.conn.Load()
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			s.readFailed(err)
			return
		}
		if a := s.ss.auto.Load(); a != nil && typ == websocket.TextMessage && string(data) == a.req {
			s.push(wsOut{typ: websocket.TextMessage, data: []byte(a.resp)})
			continue
		}
		ev := &abi.WSEvent{Kind: abi.WSEventMessage, Data: data}
		if typ == websocket.BinaryMessage {
			ev.Flags = abi.WSBinary
		}
		if err := s.deliver(ev); err != nil {
			if !errors.Is(err, ErrClosed) {
				s.ss.ns.h.log.Warn().Err(err).Str("binding", s.ss.ns.name).Str("shard", s.ss.shard).Uint64("socket", s.id).
					Msg("websocket message not handled; closing the socket with 1011")
			}
			s.fail(abi.WSCloseInternal, "the shard could not handle the message")
			return
		}
	}
}

// readFailed finishes the socket after its reader's error: a close frame
// from the client, a message over the limit, or a lost connection.
func (s *socket) readFailed(err error) {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure: // gorilla reports EOF as 1006
		s.finish(ce.Code, ce.Text, true, "")
	case errors.Is(err, websocket.ErrReadLimit):
		s.stop(abi.WSCloseTooBig, "message too big")
		s.finish(abi.WSCloseTooBig, "message too big", false, "message exceeds the host's limit of "+strconv.Itoa(s.h.cfg.WebSocket.MaxMessageBytes)+" bytes (websocket max_message_bytes)")
	default:
		s.omu.Lock()
		code, text := s.closeCode, s.closeText
		failCode, failText := s.failCode, s.failText
		s.omu.Unlock()
		if failCode != 0 { // the host failed it (fail): its reader may get here first
			s.finish(failCode, failText, false, failText)
			return
		}
		if code != 0 { // the shard closed it; the client did not answer in time
			s.finish(code, text, true, "")
			return
		}
		s.finish(abi.WSCloseAbnormal, "", false, "")
	}
}

// finish removes the socket from the registry (once), closes its
// connection and delivers the shard's last events of it: the error, if
// any, then the close. Nothing is delivered while the host stops.
func (s *socket) finish(code int, reason string, clean bool, errText string) {
	if !s.h.ws.remove(s) || s.finished.Swap(true) {
		return
	}
	s.stop(code, reason)
	if errText != "" {
		s.deliver(&abi.WSEvent{Kind: abi.WSEventError, Data: []byte(errText)})
	}
	ev := &abi.WSEvent{Kind: abi.WSEventClose, Code: uint32(code), Data: []byte(reason)}
	if clean {
		ev.Flags = abi.WSClean
	}
	s.deliver(ev)
}

// deliver queues ev on the shard's actor and waits until it has run. A
// full queue, or an instance memory budget with no room to start the
// shard, makes the reader wait (backpressure on the client) rather than
// drop the message; past wsDeliverTries the socket's event fails.
func (s *socket) deliver(ev *abi.WSEvent) error {
	ev.Socket = s.id
	var err error
	for try := 0; try < wsDeliverTries; try++ {
		e := &event{kind: evWS, ws: &wsDelivery{sock: s, ev: ev}, done: make(chan result, 1)}
		if err = s.enqueue(e); err == nil {
			err = (<-e.done).err
		}
		if !errors.Is(err, ErrOverloaded) && !errors.Is(err, errMoved) {
			return err
		}
		select {
		case <-time.After(time.Duration(min(try+1, 20)) * 5 * time.Millisecond):
		case <-s.h.closing:
			return ErrClosed
		}
	}
	return err
}

// enqueue queues a socket's event on its shard, on a host with a
// Placement under the shard's claim: a shard owned elsewhere now fails it
// (ErrShardElsewhere; the shard's sockets closed when it left).
func (s *socket) enqueue(e *event) error {
	ns := s.ss.ns
	ctx, cancel := context.WithTimeout(context.Background(), ns.h.cfg.EventTimeout)
	defer cancel()
	c, err := ns.claimHere(ctx, s.ss.shard)
	if err != nil {
		return err
	}
	return ns.enqueue(s.ss.shard, e, c)
}

// wsDeliverTries bounds the attempts to deliver an event to an overloaded
// shard (a full queue: ~5 ms apart; a full memory budget: after its
// instance_start_wait each).
const wsDeliverTries = 100

// wsDelivery is an evWS event: ev for the shard, about sock.
type wsDelivery struct {
	sock *socket
	ev   *abi.WSEvent
}

// ShardSockets returns the ids of the sockets the host holds for a shard
// of binding, in the order they were accepted.
func (h *Host) ShardSockets(binding, shard string) []uint64 {
	ns, ok := h.namespace(binding)
	if !ok {
		return nil
	}
	var ids []uint64
	for _, s := range h.ws.lookup(ns, shard).match("") {
		ids = append(ids, s.id)
	}
	return ids
}

// CloseShardSockets closes every socket of a shard with code and reason
// (the shard gets their close events) and returns how many it closed.
func (h *Host) CloseShardSockets(binding, shard string, code int, reason string) int {
	ns, ok := h.namespace(binding)
	if !ok {
		return 0
	}
	socks := h.ws.lookup(ns, shard).match("")
	for _, s := range socks {
		s.stop(code, reason)
		go s.finish(code, reason, true, "")
	}
	return len(socks)
}
