package host_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/gorilla/websocket"
)

// wsFixture is a host serving host/testdata/plugins/wsprobe as WS (per
// name) and the counter example, which has no WebSocket export, as
// COUNTER, over real HTTP.
type wsFixture struct {
	env *harness.Env
	url string // http://127.0.0.1:port
}

func startWS(t *testing.T, mutate func(*host.Config)) *wsFixture {
	t.Helper()
	cfg := testutil.HostConfig(t, harness.Bindings(
		host.Binding{Name: "WS", Module: testutil.Plugin(t, "host/testdata/plugins/wsprobe")},
		host.Binding{Name: "COUNTER", Module: testutil.Plugin(t, "examples/counter", "-X main.version=test")},
	))
	if mutate != nil {
		mutate(&cfg)
	}
	env := testutil.Host(t, harness.HostConfig(cfg), harness.HTTP())
	return &wsFixture{env: env, url: env.HTTP.URL}
}

// dial opens a socket to path under /do; it fails the test unless the
// shard accepts, and reads the shard's welcome, returning the socket id.
func (f *wsFixture) dial(t *testing.T, path string) (*websocket.Conn, uint64) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(f.url, "http")+path, nil)
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
		t.Fatalf("dial %s: %v %s", path, err, body)
	}
	t.Cleanup(func() { c.Close() })
	msg := read(t, c)
	var id uint64
	var ver string
	if _, err := fmtSscan(msg, &id, &ver); err != nil {
		t.Fatalf("welcome %q: %v", msg, err)
	}
	return c, id
}

func fmtSscan(msg string, id *uint64, ver *string) (int, error) {
	f := strings.Fields(msg)
	if len(f) != 3 || f[0] != "welcome" {
		return 0, errors.New("not a welcome")
	}
	n, err := strconv.ParseUint(f[1], 10, 64)
	*id, *ver = n, f[2]
	return 2, err
}

// dialRefused dials path and returns the refusal's status and body.
func (f *wsFixture) dialRefused(t *testing.T, path string) (int, string) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(f.url, "http")+path, nil)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: accepted, want a refusal", path)
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, no response", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func read(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func say(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
}

// wantClose reads c's next message, which must be its close with code
// (and, unless reason is empty, reason); what names the moment.
func wantClose(t *testing.T, c *websocket.Conn, code int, reason, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code || (reason != "" && ce.Text != reason) {
		t.Fatalf("%s: %v, want close %d %s", what, err, code, reason)
	}
}

// ask sends msg and returns the next message.
func ask(t *testing.T, c *websocket.Conn, msg string) string {
	t.Helper()
	say(t, c, msg)
	return read(t, c)
}

// do answers an HTTP request to the host (testutil.Do).
func (f *wsFixture) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	return testutil.Do(t, method, f.url+path, body)
}

// event waits for the shard to store its close or error event of a
// socket (key closed:<id> or error:<id>) and returns it.
func (f *wsFixture) event(t *testing.T, room, key string) string {
	t.Helper()
	var got string
	testutil.WaitFor(t, 30*time.Second, key+" stored by the shard", func() bool {
		status, body := f.do(t, "GET", "/do/WS/"+room+"/event?key="+key, "")
		got = body
		return status == 200
	})
	return got
}

// live reports whether the shard has an actor (its instance may be
// running); false once it was evicted.
func (f *wsFixture) live(binding, shard string) bool {
	ns, _ := f.env.Host.Namespace(binding)
	for _, s := range ns.Stats() {
		if s.Shard == shard {
			return true
		}
	}
	return false
}

func idStr(id uint64) string { return strconv.FormatUint(id, 10) }

// TestWebSocketAcceptAndRoundTrip: the shard accepts an upgrade with tags
// and an attachment, sends a welcome from the accepting fetch, answers
// messages, and every event carries the socket's tags and attachment.
func TestWebSocketAcceptAndRoundTrip(t *testing.T) {
	f := startWS(t, nil)
	c, id := f.dial(t, "/do/WS/lobby/ws?tags=red,blue&att=ann")
	if got := ask(t, c, "echo hello"); got != "echo hello" {
		t.Fatalf("echo: %q", got)
	}
	want := "id=" + idStr(id) + " att=ann tags=red,blue"
	if got := ask(t, c, "whoami"); !strings.HasPrefix(got, want) {
		t.Fatalf("whoami: %q, want %q…", got, want)
	}
	say(t, c, "att bob")
	if got := ask(t, c, "whoami"); !strings.Contains(got, "att=bob") {
		t.Fatalf("attachment not replaced: %q", got)
	}
	if _, body := f.do(t, "GET", "/do/WS/lobby/sockets", ""); body != idStr(id)+" bob red,blue\n" {
		t.Fatalf("ws_list: %q", body)
	}
	if got := f.env.Host.ShardSockets("WS", "lobby"); len(got) != 1 || got[0] != id {
		t.Fatalf("ShardSockets: %v, want [%d]", got, id)
	}
	c2, _ := f.dial(t, "/do/WS/other/ws")
	if got := ask(t, c2, "echo other"); got != "echo other" {
		t.Fatalf("echo on another shard: %q", got)
	}
	// Binary messages arrive as binary.
	if err := c.WriteMessage(websocket.BinaryMessage, []byte("echo bin")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != "echo bin" {
		t.Fatalf("binary echo: %q", got)
	}
}

// TestWebSocketRefused: a shard that answers an upgrade without accepting
// it refuses it with its own response; a module without the WebSocket
// export refuses every upgrade with 501; a malformed upgrade is a 4xx
// with a JSON error.
func TestWebSocketRefused(t *testing.T) {
	f := startWS(t, nil)
	status, body := f.dialRefused(t, "/do/WS/lobby/ws?refuse=1")
	if status != 403 || !strings.Contains(body, `"code":"refused"`) {
		t.Fatalf("refused: %d %s", status, body)
	}
	status, body = f.dialRefused(t, "/do/COUNTER/a/ws")
	if status != 501 || !strings.Contains(body, `"code":"websocket_unsupported"`) || !strings.Contains(body, "edgeshard_ws_event") {
		t.Fatalf("module without the export: %d %s", status, body)
	}
	status, body = f.dialRefused(t, "/do/NOPE/a/ws")
	if status != 404 || !strings.Contains(body, `"code":"unknown_binding"`) {
		t.Fatalf("unknown binding: %d %s", status, body)
	}
	// A plain GET of the socket's path is the shard's business.
	if status, body := f.do(t, "GET", "/do/WS/lobby/ws", ""); status != 426 {
		t.Fatalf("plain GET: %d %s", status, body)
	}
	// An upgrade with an unsupported version.
	req, _ := http.NewRequest("GET", f.url+"/do/WS/lobby/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "8")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 426 || resp.Header.Get("Sec-WebSocket-Version") != "13" || !strings.Contains(string(b), `"code":"bad_upgrade"`) {
		t.Fatalf("version 8: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	if ids := f.env.Host.ShardSockets("WS", "lobby"); len(ids) != 0 {
		t.Fatalf("refused upgrades left sockets: %v", ids)
	}
}

// TestWebSocketBroadcastByTag: a broadcast reaches exactly the sockets
// with its tag, from a socket's event and from a fetch.
func TestWebSocketBroadcastByTag(t *testing.T) {
	f := startWS(t, nil)
	r1, _ := f.dial(t, "/do/WS/room/ws?tags=red")
	r2, _ := f.dial(t, "/do/WS/room/ws?tags=red,green")
	b1, _ := f.dial(t, "/do/WS/room/ws?tags=blue")
	say(t, b1, "bcast red hi reds")
	for i, c := range []*websocket.Conn{r1, r2} {
		if got := read(t, c); got != "hi reds" {
			t.Fatalf("red socket %d: %q", i, got)
		}
	}
	// The blue socket got nothing: its next message is its own echo.
	if got := ask(t, b1, "echo after"); got != "echo after" {
		t.Fatalf("blue socket: %q, want only its echo", got)
	}
	if status, n := f.do(t, "POST", "/do/WS/room/broadcast?tag=green", "to greens"); status != 200 || n != "1" {
		t.Fatalf("broadcast from a fetch: %d %q", status, n)
	}
	if got := read(t, r2); got != "to greens" {
		t.Fatalf("green socket: %q", got)
	}
	if status, n := f.do(t, "POST", "/do/WS/room/broadcast", "to all"); status != 200 || n != "3" {
		t.Fatalf("broadcast to all: %d %q", status, n)
	}
	for _, c := range []*websocket.Conn{r1, r2, b1} {
		if got := read(t, c); got != "to all" {
			t.Fatalf("broadcast to all: %q", got)
		}
	}
}

// TestWebSocketClose: the shard closes a socket with its code; a client's
// close and a lost connection each give the shard one close event.
func TestWebSocketClose(t *testing.T) {
	f := startWS(t, nil)
	c, id := f.dial(t, "/do/WS/room/ws?att=a1")
	say(t, c, "close 4001")
	wantClose(t, c, 4001, "bye", "shard close")
	// The close event reports the client's answer: gorilla echoes the code, no reason.
	if got := f.event(t, "room", "closed:"+idStr(id)); got != "4001  clean=true att=a1" {
		t.Fatalf("close event after the shard's close: %q", got)
	}

	c2, id2 := f.dial(t, "/do/WS/room/ws")
	c2.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "done"))
	if got := f.event(t, "room", "closed:"+idStr(id2)); got != "1000 done clean=true att=" {
		t.Fatalf("close event after the client's close: %q", got)
	}

	c3, id3 := f.dial(t, "/do/WS/room/ws")
	c3.Close() // no close frame
	if got := f.event(t, "room", "closed:"+idStr(id3)); got != "1006  clean=false att=" {
		t.Fatalf("close event after a lost connection: %q", got)
	}
	if ids := f.env.Host.ShardSockets("WS", "room"); len(ids) != 0 {
		t.Fatalf("closed sockets still held: %v", ids)
	}
	// A shard cannot close with a reserved code.
	c4, _ := f.dial(t, "/do/WS/room/ws")
	if got := ask(t, c4, "close 1006"); !strings.HasPrefix(got, "err ws.close: invalid argument: close code 1006") {
		t.Fatalf("close 1006: %q", got)
	}
}

// TestWebSocketHibernation: the shard's instance is evicted while its
// socket stays open; the next message starts a fresh instance, and the
// socket's attachment and tags are intact.
func TestWebSocketHibernation(t *testing.T) {
	f := startWS(t, func(c *host.Config) { c.IdleTimeout = 100 * time.Millisecond })
	c, id := f.dial(t, "/do/WS/cave/ws?tags=bear&att=first")
	say(t, c, "att second")
	if got := ask(t, c, "whoami"); !strings.Contains(got, "att=second") {
		t.Fatalf("whoami: %q", got)
	}
	testutil.WaitFor(t, 10*time.Second, "the shard's instance evicted", func() bool { return !f.live("WS", "cave") })
	if ids := f.env.Host.ShardSockets("WS", "cave"); len(ids) != 1 || ids[0] != id {
		t.Fatalf("socket not held while the shard hibernates: %v", ids)
	}
	want := "id=" + idStr(id) + " att=second tags=bear events=1 v1"
	if got := ask(t, c, "whoami"); got != want {
		t.Fatalf("after hibernation: %q, want %q (events=1: a fresh instance)", got, want)
	}
}

// TestWebSocketAutoResponse: the host answers the auto-response's
// request itself; the hibernating shard is not woken.
func TestWebSocketAutoResponse(t *testing.T) {
	f := startWS(t, func(c *host.Config) { c.IdleTimeout = 100 * time.Millisecond })
	c, _ := f.dial(t, "/do/WS/den/ws")
	if status, body := f.do(t, "POST", "/do/WS/den/auto?req=ping&resp=pong", ""); status != 200 {
		t.Fatalf("set auto-response: %d %s", status, body)
	}
	testutil.WaitFor(t, 10*time.Second, "the shard's instance evicted", func() bool { return !f.live("WS", "den") })
	for range 3 {
		if got := ask(t, c, "ping"); got != "pong" {
			t.Fatalf("auto-response: %q", got)
		}
	}
	if f.live("WS", "den") {
		t.Fatal("the auto-response woke the shard")
	}
	// Other messages still reach it.
	if got := ask(t, c, "echo awake"); got != "echo awake" {
		t.Fatalf("echo: %q", got)
	}
	// An empty request removes it: "ping" is the shard's again.
	f.do(t, "POST", "/do/WS/den/auto", "")
	if got := ask(t, c, "ping"); got != "unknown ping" {
		t.Fatalf("after removing the auto-response: %q", got)
	}
}

// TestWebSocketLimits: sockets per shard and message size are refused
// with clear errors, either way.
func TestWebSocketLimits(t *testing.T) {
	f := startWS(t, func(c *host.Config) {
		c.WebSocket = host.WebSocketLimits{MaxSocketsPerShard: 2, MaxMessageBytes: 1024}
	})
	f.dial(t, "/do/WS/full/ws")
	c, id := f.dial(t, "/do/WS/full/ws")
	status, body := f.dialRefused(t, "/do/WS/full/ws")
	if status != 503 || !strings.Contains(body, "max_sockets_per_shard") || !strings.Contains(body, "2") {
		t.Fatalf("third socket: %d %s", status, body)
	}
	if got := ask(t, c, "big 2000"); !strings.Contains(got, "message of 2000 bytes exceeds the host's limit of 1024") {
		t.Fatalf("shard's large send: %q", got)
	}
	if err := c.WriteMessage(websocket.TextMessage, make([]byte, 2000)); err != nil {
		t.Fatal(err)
	}
	wantClose(t, c, 1009, "", "client's large message")
	if got := f.event(t, "full", "error:"+idStr(id)); !strings.Contains(got, "exceeds the host's limit of 1024 bytes") {
		t.Fatalf("error event: %q", got)
	}
	if got := f.event(t, "full", "closed:"+idStr(id)); !strings.HasPrefix(got, "1009 ") {
		t.Fatalf("close event: %q", got)
	}
	// The socket is gone: a new one fits.
	f.dial(t, "/do/WS/full/ws")
}

// TestWebSocketCrashClosesSocket: a handler that crashes loses its event
// (the instance restarts from storage); the socket is closed with 1011
// and the restarted shard gets its close event.
func TestWebSocketCrashClosesSocket(t *testing.T) {
	f := startWS(t, nil)
	c, id := f.dial(t, "/do/WS/boom/ws")
	say(t, c, "panic")
	wantClose(t, c, 1011, "", "after a crash")
	if got := f.event(t, "boom", "closed:"+idStr(id)); !strings.HasPrefix(got, "1011 ") {
		t.Fatalf("close event: %q", got)
	}
}

// TestWebSocketHotSwap: sockets stay open across a module swap; their
// next events run on the new version.
func TestWebSocketHotSwap(t *testing.T) {
	f := startWS(t, nil)
	c, id := f.dial(t, "/do/WS/swap/ws?att=kept")
	if got := ask(t, c, "whoami"); !strings.HasSuffix(got, " v1") {
		t.Fatalf("before the swap: %q", got)
	}
	ns, _ := f.env.Host.Namespace("WS")
	if _, err := ns.Swap(context.Background(), testutil.PluginBytes(t, "host/testdata/plugins/wsprobe", "-X main.version=2"), "test"); err != nil {
		t.Fatal(err)
	}
	got := ask(t, c, "whoami")
	if !strings.HasPrefix(got, "id="+idStr(id)+" att=kept") || !strings.HasSuffix(got, " v2") {
		t.Fatalf("after the swap: %q", got)
	}
}

// TestWebSocketHostClose: closing the host closes its sockets with 1001.
func TestWebSocketHostClose(t *testing.T) {
	f := startWS(t, nil)
	c, _ := f.dial(t, "/do/WS/bye/ws")
	f.env.HTTP.Close()
	if err := f.env.Host.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantClose(t, c, 1001, "", "after host close")
}

// TestWebSocketFlood: one event may queue at most 64 MiB of messages
// (ErrnoLimit past it); a socket whose unsent messages pass
// send_queue_bytes is closed with 1013, with an error event first.
func TestWebSocketFlood(t *testing.T) {
	f := startWS(t, nil)
	c, id := f.dial(t, "/do/WS/flood/ws")
	say(t, c, "flood 1048576 70")
	got := f.event(t, "flood", "flood")
	if !strings.HasPrefix(got, "64 ws.send: event limit exceeded: message of 1048576 bytes refused: this event already queued 67108864 bytes") {
		t.Fatalf("flood: %q", got)
	}
	if got := f.event(t, "flood", "error:"+idStr(id)); !strings.Contains(got, "send queue overflow") {
		t.Fatalf("error event: %q", got)
	}
	if got := f.event(t, "flood", "closed:"+idStr(id)); !strings.HasPrefix(got, "1013 ") {
		t.Fatalf("close event: %q", got)
	}
}

// TestWebSocketOutputGate: what an event sends leaves only once its
// writes are durable: with every commit failing (a disk below the
// reserve), the reply of an event that wrote is never sent; once the
// failure is known (the shard restarts from storage), the reply of an
// event that wrote nothing is.
func TestWebSocketOutputGate(t *testing.T) {
	f := startWS(t, func(c *host.Config) { c.Badger.MinFreeBytes = 1 << 60 })
	c, _ := f.dial(t, "/do/WS/gate/ws")
	say(t, c, "put k v")
	time.Sleep(300 * time.Millisecond) // the group commit refuses the write meanwhile
	if got := ask(t, c, "echo after"); got != "echo after" {
		t.Fatalf("after a failed commit: %q, want only the next event's reply", got)
	}
}

// TestWebSocketAcceptOutsideUpgrade: ws_accept in the fetch of a plain
// request is refused.
func TestWebSocketAcceptOutsideUpgrade(t *testing.T) {
	f := startWS(t, nil)
	status, body := f.do(t, "GET", "/do/WS/x/accept-plain", "")
	if status != 400 || !strings.Contains(body, "ws_accept outside the fetch of a WebSocket upgrade request") {
		t.Fatalf("accept outside an upgrade: %d %s", status, body)
	}
}

// TestWebSocketSwapToModuleWithout: after a swap to a module without the
// WebSocket export, an open socket is closed (1011) at its next message
// and new upgrades are refused (501).
func TestWebSocketSwapToModuleWithout(t *testing.T) {
	f := startWS(t, nil)
	c, _ := f.dial(t, "/do/WS/gone/ws")
	ns, _ := f.env.Host.Namespace("WS")
	if _, err := ns.Swap(context.Background(), testutil.PluginBytes(t, "examples/counter", "-X main.version=test"), "test"); err != nil {
		t.Fatal(err)
	}
	say(t, c, "echo x")
	wantClose(t, c, 1011, "", "after a swap to a module without WebSockets")
	if status, body := f.dialRefused(t, "/do/WS/gone/ws"); status != 501 {
		t.Fatalf("new upgrade: %d %s", status, body)
	}
}
