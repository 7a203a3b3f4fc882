package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/cluster"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/etcdtest"
	"github.com/edgeshard/edgeshard/internal/loopback"
	"github.com/edgeshard/edgeshard/internal/server"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// Tests of a POP of two in-process servers (internal/server, as `edgeshard
// serve` runs them) on the shared embedded etcd: what the host's other
// paths than a plain request do under a Placement.

const popToken = "pop-test-token"

// popConfig is the config of node id of a POP (prefix): the chat example
// (WebSockets) and the outbound test plugin's A and B (shard_call), all
// per-name.
func popConfig(t *testing.T, id, addr, admin, prefix, extra string) string {
	t.Helper()
	return fmt.Sprintf(`listen = %q
admin_listen = %q
admin_token = %q
data_dir = %q
cache_dir = %q
node_id = %q
idle_timeout = "300ms"
shutdown_grace = "20s"

[[durable_objects.bindings]]
name = "CHAT"
module = %q
shards = 0

[[durable_objects.bindings]]
name = "A"
module = %q
shards = 0
calls = ["A", "B"]
fetch_hosts = ["api.example.com"]

[[durable_objects.bindings]]
name = "B"
module = %q
shards = 0
calls = ["A"]
fetch_hosts = ["api.example.com"]
%s
[edge]
enabled = false

[cluster]
etcd = [%q]
advertise = "http://%s"
lease_ttl = "2s"
prefix = %q
secret = "pop"
`, addr, admin, popToken, filepath.Join(t.TempDir(), id), testutil.CacheDir(), id,
		testutil.Plugin(t, "examples/chat"), testutil.Plugin(t, "host/testdata/plugins/outbound"), testutil.Plugin(t, "host/testdata/plugins/outbound"),
		extra, etcdtest.Shared(t).Endpoint(), addr, prefix)
}

type popHost struct {
	s           *server.Server
	addr, admin string
}

func startPop(t *testing.T, ids ...string) map[string]*popHost {
	t.Helper()
	prefix := etcdtest.Prefix(t)
	hosts := map[string]*popHost{}
	for _, id := range ids {
		addr, err := loopback.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		admin, err := loopback.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse([]byte(popConfig(t, id, addr, admin, prefix, "")), "edgeshard.toml")
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			t.Fatal(err)
		}
		s, err := server.New(cfg, server.Options{Logger: popLogger(t, id), LookupEnv: func(string) (string, bool) { return "", false }})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop(context.Background()) })
		hosts[id] = &popHost{s: s, addr: addr, admin: admin}
	}
	// Every host sees every member before a shard is placed.
	for id, h := range hosts {
		deadline := time.Now().Add(15 * time.Second)
		for {
			var st cluster.Status
			code, body := testutil.Do(t, "GET", "http://"+h.admin+"/admin/cluster", "", "Authorization", "Bearer "+popToken)
			if code == 200 && json.Unmarshal([]byte(body), &st) == nil && len(st.Members) == len(ids) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: members not seen: %d %s", id, code, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return hosts
}

// ownedBy returns a name of binding that the placement gives to node.
func ownedBy(binding, node string, nodes []string) string {
	for i := 0; ; i++ {
		if name := fmt.Sprintf("k%d", i); cluster.Owner(binding, name, nodes) == node {
			return name
		}
	}
}

func dialChat(addr, room string) (*websocket.Conn, *http.Response, error) {
	return websocket.DefaultDialer.Dial("ws://"+addr+"/do/CHAT/"+room+"/ws?user=u", nil)
}

// TestPopWebSocketsStayWithTheOwner: an upgrade sent to a host that does
// not own the room is relayed to the owner, which accepts it (the socket
// is the owner's; the other host starts nothing and holds no socket),
// while one already relayed by a host is refused (421 shard_elsewhere
// naming the owner: no relay loops); when the owner leaves the POP the
// room moves and its socket — through the relay too — is closed with
// 1012, and the client reconnects, to the room's new owner.
func TestPopWebSocketsStayWithTheOwner(t *testing.T) {
	nodes := []string{"a", "b"}
	pop := startPop(t, nodes...)
	room := ownedBy("CHAT", "b", nodes)

	_, resp, err := websocket.DefaultDialer.Dial("ws://"+pop["a"].addr+"/do/CHAT/"+room+"/ws?user=u", http.Header{cluster.HopHeader: {"c"}})
	if err == nil || resp == nil {
		t.Fatalf("relayed upgrade on the host that does not own the room: err %v, want a refusal", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(string(body), `"shard_elsewhere"`) || !strings.Contains(string(body), "node b") {
		t.Fatalf("relayed upgrade on a: %d %s, want 421 shard_elsewhere naming node b", resp.StatusCode, body)
	}

	c, _, err := dialChat(pop["a"].addr, room)
	if err != nil {
		t.Fatalf("upgrade on the host that does not own the room (relayed to its owner): %v", err)
	}
	defer c.Close()
	say := func(text string) {
		t.Helper()
		if err := c.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %q: %v", text, err)
			}
			if strings.Contains(string(b), `"text":"`+text+`"`) {
				return
			}
		}
	}
	say("hello")
	if ids := pop["a"].s.Host().ShardSockets("CHAT", room); len(ids) != 0 {
		t.Fatalf("host a holds sockets %v of a room it does not own", ids)
	}
	if ids := pop["b"].s.Host().ShardSockets("CHAT", room); len(ids) != 1 {
		t.Fatalf("the room's owner b holds sockets %v, want the relayed one", ids)
	}
	// Idle: the room's instance goes (the socket hibernates), its actor
	// and claim stay with the socket — the room is still b's.
	ns, _ := pop["b"].s.Host().Namespace("CHAT")
	testutil.WaitFor(t, 10*time.Second, "the room's instance evicted", func() bool {
		st := ns.Stats()
		return len(st) == 1 && !st[0].Live
	})
	say("still here")

	// b leaves (as on SIGTERM): the room moves to a, its socket closes.
	stopped := make(chan error, 1)
	go func() { stopped <- pop["b"].s.Stop(context.Background()) }()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var closeErr *websocket.CloseError
	for {
		if _, _, err = c.ReadMessage(); err != nil {
			break
		}
	}
	if !errors.As(err, &closeErr) || closeErr.Code != abi.WSCloseRestart {
		t.Fatalf("socket (relayed by a) on the leaving owner ended with %v, want close %d", err, abi.WSCloseRestart)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	c2, _, err := dialChat(pop["a"].addr, room)
	if err != nil {
		t.Fatalf("reconnect to the room's new owner: %v", err)
	}
	c2.Close()
}

// TestPopShardCallIsPlaced: a shard_call to a shard another host owns is
// forwarded there with its chain (its state is on the owner only; it sees
// its caller), and one to a shard of the calling host runs there; neither
// starts a second instance. A cycle through the two hosts is refused at
// once as a deadlock, not left to the caller's deadline.
func TestPopShardCallIsPlaced(t *testing.T) {
	nodes := []string{"a", "b"}
	pop := startPop(t, nodes...)
	caller, far, near := ownedBy("A", "a", nodes), ownedBy("B", "b", nodes), ownedBy("B", "a", nodes)
	chain := func(h, binding, key string, hops ...string) string {
		t.Helper()
		code, body := testutil.Do(t, "GET", "http://"+pop[h].addr+"/do/"+binding+"/"+key+"/chain?"+url.Values{"hop": hops}.Encode(), "")
		if code != 200 {
			t.Fatalf("%s %s/%s %v: %d %s", h, binding, key, hops, code, body)
		}
		return body
	}
	// A/caller runs on a; B/far is b's: the call is forwarded with its
	// chain (the called shard sees its caller).
	if got, want := chain("a", "A", caller, "B/"+far), "A/"+caller+" -> [200] B/"+far+" end caller=A/"+caller+" n=1"; got != want {
		t.Fatalf("call to a shard of the other host: %q, want %q", got, want)
	}
	if got, want := chain("a", "A", caller, "B/"+near), "A/"+caller+" -> [200] B/"+near+" end caller=A/"+caller+" n=1"; got != want {
		t.Fatalf("call to a shard of the same host: %q, want %q", got, want)
	}
	// A/caller (on a) → B/far (on b) → A/caller: refused on b at once
	// (errno 15), the chain having come with the forwarded call.
	t0 := time.Now()
	deadlock := fmt.Sprintf("A/%s -> [200] B/%s err %d: ", caller, far, abi.ErrnoDeadlock)
	if got := chain("a", "A", caller, "B/"+far, "A/"+caller); !strings.HasPrefix(got, deadlock) {
		t.Fatalf("cycle through two hosts: %q, want prefix %q", got, deadlock)
	}
	if took := time.Since(t0); took > 3*time.Second {
		t.Fatalf("cycle through two hosts took %v: not refused at once", took)
	}
	// The forwarded calls' writes are on b, and only there.
	ctx := host.LocalOnly(context.Background())
	resp, err := pop["b"].s.Host().Fetch(ctx, "B", far, &abi.Request{Method: "GET", Path: "/chain"})
	if err != nil || string(resp.Body) != "B/"+far+" end caller= n=2" {
		t.Fatalf("B/%s on its owner b: %v %v", far, resp, err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond) // a forwarded request waits for the owner while ctx lasts
	defer cancel()
	if _, err := pop["a"].s.Host().Fetch(short, "B", far, &abi.Request{Method: "GET", Path: "/chain"}); !errors.Is(err, host.ErrNotOwner) {
		t.Fatalf("B/%s run locally on a: %v, want ErrNotOwner", far, err)
	}
	// A control event never starts a shard on a host that does not own it.
	nsB, _ := pop["a"].s.Host().Namespace("B")
	if err := nsB.Restart(context.Background(), far); !errors.Is(err, host.ErrNotOwner) {
		t.Fatalf("restart of B/%s on a: %v, want ErrNotOwner (not here)", far, err)
	}
}

// TestPopRefusesShardSQL: a binding with a database per shard cannot be
// part of a POP: the config is refused, naming the binding.
func TestPopRefusesShardSQL(t *testing.T) {
	text := popConfig(t, "a", "127.0.0.1:1", "127.0.0.1:2", "/x", "sql = \"shard\"\n")
	f, err := config.Parse([]byte(text), "edgeshard.toml")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = cluster.ConfigFromFile(f, nil)
	if err == nil || !strings.Contains(err.Error(), `binding "B": sql = "shard" is not supported on a POP`) {
		t.Fatalf("[cluster] with sql = \"shard\": %v", err)
	}
}

// popLogger logs a host's warnings and errors (and its cluster's info) to
// the test log, prefixed with its node id.
func popLogger(t *testing.T, id string) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).With().Str("test_node", id).Logger().Level(zerolog.InfoLevel)
}
