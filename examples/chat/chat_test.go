//go:build !wasip1

package main_test

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/gorilla/websocket"
)

type line struct {
	Type, User, Text string
	At               int64
}

func start(t *testing.T) (*harness.Env, string) {
	t.Helper()
	env := testutil.Host(t, harness.Bindings(host.Binding{Name: "CHAT", Module: testutil.Plugin(t, "examples/chat")}),
		harness.Configure(func(c *host.Config) { c.IdleTimeout = 100 * time.Millisecond }), harness.HTTP())
	return env, env.HTTP.URL
}

func connect(t *testing.T, base, room, user string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/do/CHAT/"+room+"/ws?user="+user, nil)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("connect %s: %v: %d %s", user, err, resp.StatusCode, b)
		}
		t.Fatalf("connect %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next reads the next line, skipping none.
func next(t *testing.T, c *websocket.Conn) line {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var l line
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("line %q: %v", b, err)
	}
	return l
}

func want(t *testing.T, c *websocket.Conn, typ, user, text string) {
	t.Helper()
	if l := next(t, c); l.Type != typ || l.User != user || l.Text != text {
		t.Fatalf("got %+v, want %s %s %q", l, typ, user, text)
	}
}

func send(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	_, body := testutil.Do(t, "GET", url, "")
	return body
}

// TestChatRoom: members join, talk, whisper and leave; a newcomer gets
// the history; the room hibernates between messages and still knows who
// is who; ping is answered without waking it.
func TestChatRoom(t *testing.T) {
	env, base := start(t)
	ann := connect(t, base, "lobby", "ann")
	want(t, ann, "join", "ann", "")
	send(t, ann, "hello")
	want(t, ann, "message", "ann", "hello")

	bob := connect(t, base, "lobby", "bob")
	want(t, bob, "join", "ann", "") // the history first
	want(t, bob, "message", "ann", "hello")
	want(t, bob, "join", "bob", "")
	want(t, ann, "join", "bob", "")

	send(t, bob, "/to ann psst")
	want(t, ann, "whisper", "bob", "psst")
	send(t, bob, "/to carol hi")
	want(t, bob, "error", "", "carol is not here")

	var m struct {
		Room    string
		Members []string
	}
	if err := json.Unmarshal([]byte(get(t, base+"/do/CHAT/lobby/members")), &m); err != nil || m.Room != "lobby" || strings.Join(m.Members, ",") != "ann,bob" {
		t.Fatalf("members: %+v %v", m, err)
	}

	// Hibernation: the room's instance goes; the sockets stay.
	ns, _ := env.Host.Namespace("CHAT")
	testutil.WaitFor(t, 10*time.Second, "the room evicted", func() bool { return len(ns.Stats()) == 0 })
	send(t, ann, "ping")
	ann.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, b, err := ann.ReadMessage(); err != nil || string(b) != "pong" {
		t.Fatalf("ping: %q %v", b, err)
	}
	if len(ns.Stats()) != 0 {
		t.Fatal("ping woke the room")
	}
	send(t, ann, "still here")
	want(t, bob, "message", "ann", "still here")
	want(t, ann, "message", "ann", "still here")

	bob.Close()
	want(t, ann, "leave", "bob", "")
	var h []line
	if err := json.Unmarshal([]byte(get(t, base+"/do/CHAT/lobby/history")), &h); err != nil || len(h) != 5 || h[4].Type != "leave" {
		t.Fatalf("history: %+v %v", h, err)
	}
	if page := get(t, base+"/do/CHAT/lobby/"); !strings.Contains(page, "new WebSocket(") {
		t.Fatalf("page: %.200s", page)
	}
}
