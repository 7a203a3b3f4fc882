package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/gorilla/websocket"
)

// wsConfig serves host/testdata/plugins/wsprobe (accept, a welcome, echo
// and broadcast commands) as the per-name binding WS, with an idle timeout
// that evicts a room's instance between measurements.
const wsConfig = `listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
admin_token = "{{TOKEN}}"
data_dir = "{{DATA}}"
cache_dir = "{{CACHE}}"
log_level = "warn"
idle_timeout = "{{IDLE}}"

[[durable_objects.bindings]]
name = "WS"
module = "{{WS}}"
shards = 0

[websocket]
max_sockets_per_shard = 100000

[edge]
enabled = false
`

// Goals of the WebSocket figures: an idle socket of a hibernating shard
// costs the host less than a few pages; a broadcast reaches a room of
// 1,000 sockets within a frame of a game (50 ms), the last socket
// included.
const (
	wsIdleGoalKiB     = 24
	wsBroadcastGoalMs = 50
)

// startWSServe starts `edgeshard serve` with wsConfig and idle as its
// idle_timeout in the figure's scratch directory; it stops with the
// figure.
func (r *runner) startWSServe(w *scratch, idle string) (*serveProc, error) {
	return r.startWarm(w, strings.ReplaceAll(wsConfig, "{{IDLE}}", idle), map[string]string{"WS": "host/testdata/plugins/wsprobe"})
}

// wsIdle: what an idle socket costs the host when its shard hibernates —
// WSSockets sockets over WSRooms rooms of the real binary, every room's
// instance evicted — as the growth of the process's VmRSS (and Go heap)
// over a baseline where the same rooms had started and been evicted,
// divided by the sockets. The clients are raw connections in this process
// (no reader, no buffer), so they cost the host nothing but their socket.
func (r *runner) wsIdle(w *scratch) (*result, error) {
	sz := r.sz
	sp, err := r.startWSServe(w, "1s")
	if err != nil {
		return nil, err
	}
	client := newClient(16)
	defer client.CloseIdleConnections()
	room := func(i int) string { return "room-" + strconv.Itoa(i%sz.WSRooms) }
	// Baseline: every room started once and evicted again, so the
	// instances' pooled memory and the storage of every room are in it.
	err = parallel(8, sz.WSRooms, func(i int) error {
		st, b, err := callHTTP(context.Background(), client, http.MethodGet, sp.base+"/do/WS/"+room(i)+"/sockets", nil)
		if err == nil && st != 200 {
			err = fmt.Errorf("sockets: status %d: %s", st, b)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := waitEvicted(sp); err != nil {
		return nil, err
	}
	base, err := sp.memory()
	if err != nil {
		return nil, err
	}
	goBase, _ := sp.gauge("go_goroutines")

	addr := strings.TrimPrefix(sp.base, "http://")
	conns := make([]net.Conn, sz.WSSockets)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	t0 := time.Now()
	err = parallel(16, sz.WSSockets, func(i int) error {
		c, err := rawDial(addr, "/do/WS/"+room(i)+"/ws?att=u"+strconv.Itoa(i))
		conns[i] = c
		return err
	})
	if err != nil {
		return nil, err
	}
	took := time.Since(t0)
	if err := waitEvicted(sp); err != nil {
		return nil, err
	}
	held, err := sp.gauge(`edgeshard_websockets{binding="WS"}`)
	if err != nil {
		return nil, err
	}
	if int(held) != sz.WSSockets {
		return nil, fmt.Errorf("the host holds %d sockets, want %d", int(held), sz.WSSockets)
	}
	after, err := sp.memory()
	if err != nil {
		return nil, err
	}
	goAfter, _ := sp.gauge("go_goroutines")
	// The sockets are alive: one of them wakes its room.
	if got, err := rawAsk(conns[sz.WSSockets-1], "echo awake"); err != nil || got != "echo awake" {
		return nil, fmt.Errorf("a hibernating socket's echo: %q %v", got, err)
	}
	n := float64(sz.WSSockets)
	rssKiB := float64(after.rss-base.rss) / n / 1024
	heapKiB := float64(after.heapInuse-base.heapInuse) / n / 1024
	sysKiB := float64(after.goSys-base.goSys) / n / 1024
	perGo := (goAfter - goBase) / n
	r.logf("ws_idle_mem: %d sockets over %d rooms in %v; RSS %d -> %d MiB, heap %d -> %d MiB, goroutines %.0f -> %.0f",
		sz.WSSockets, sz.WSRooms, took.Round(time.Millisecond), base.rss>>20, after.rss>>20, base.heapInuse>>20, after.heapInuse>>20, goBase, goAfter)
	res := &result{name: "ws_idle_mem", met: rssKiB <= wsIdleGoalKiB}
	res.add("rss_kib_per_socket", rssKiB)
	res.add("heap_kib_per_socket", heapKiB)
	res.add("go_sys_kib_per_socket", sysKiB)
	res.add("goroutines_per_socket", perGo)
	res.add("sockets", sz.WSSockets)
	res.add("rooms", sz.WSRooms)
	res.add("live_instances", 0)
	res.add("dial_s", took.Seconds())
	res.add("goal_max_kib", wsIdleGoalKiB)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("%.1f KiB/socket (heap %.1f KiB)", rssKiB, heapKiB)
	res.note = fmt.Sprintf("VmRSS growth of `edgeshard serve` for %d open sockets over %d rooms, every room's instance evicted; %.1f goroutines per socket", sz.WSSockets, sz.WSRooms, perGo)
	return res, nil
}

// waitEvicted waits until no WS instance is live (idle_timeout 1 s).
func waitEvicted(sp *serveProc) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		live, err := sp.gauge(`edgeshard_shard_instances{binding="WS"}`)
		if err != nil {
			return err
		}
		if live == 0 {
			time.Sleep(500 * time.Millisecond) // let the evictions' garbage go
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.New("WS instances still live after a minute")
}

// rawDial opens a WebSocket with a hand-written handshake, reads the
// shard's welcome and keeps nothing but the connection.
func rawDial(addr, path string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, addr)
	br := bufio.NewReaderSize(c, 512)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 101 ") {
		c.Close()
		return nil, fmt.Errorf("handshake %s: %q %v", path, status, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, err
		}
		if l == "\r\n" {
			break
		}
	}
	if _, err := readFrame(br); err != nil {
		c.Close()
		return nil, fmt.Errorf("welcome: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// readFrame reads one unmasked server frame of under 64 KiB.
func readFrame(r io.Reader) (string, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return "", err
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		if _, err := io.ReadFull(r, h[2:4]); err != nil {
			return "", err
		}
		n = int(h[2])<<8 | int(h[3])
	} else if n > 126 {
		return "", errors.New("frame too large for the benchmark's reader")
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return string(b), err
}

// rawAsk sends a short text frame (masked with a zero key, as a client
// must mask) on a raw connection and reads the answer.
func rawAsk(c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	frame := append([]byte{0x81, 0x80 | byte(len(msg)), 0, 0, 0, 0}, msg...)
	if _, err := c.Write(frame); err != nil {
		return "", err
	}
	return readFrame(c)
}

// wsBroadcast: how long a broadcast takes to reach every socket of a
// room of WSFan sockets, from the message that asks for it on one of them
// (a socket's event on the shard, ws_broadcast to all, the host's writes)
// to its arrival at each client, over WSRounds rounds: the last socket's
// latency (median and worst round) and the per-socket p50 and p99.
func (r *runner) wsBroadcast(w *scratch) (*result, error) {
	sz := r.sz
	sp, err := r.startWSServe(w, "1h")
	if err != nil {
		return nil, err
	}
	url := "ws" + strings.TrimPrefix(sp.base, "http") + "/do/WS/fan/ws"
	type arrival struct {
		round int
		at    time.Time
	}
	arrivals := make(chan arrival, sz.WSFan*4)
	conns := make([]*websocket.Conn, sz.WSFan)
	var wg sync.WaitGroup
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		wg.Wait()
	}()
	err = parallel(16, sz.WSFan, func(i int) error {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			return err
		}
		conns[i] = c
		if _, _, err := c.ReadMessage(); err != nil { // the welcome
			return err
		}
		wg.Go(func() {
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					return
				}
				if n, err := strconv.Atoi(strings.TrimPrefix(string(b), "r")); err == nil {
					arrivals <- arrival{n, time.Now()}
				}
			}
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	var lasts, p50s, p99s []float64
	for round := 0; round < sz.WSRounds+1; round++ { // round 0 warms up
		t0 := time.Now()
		if err := conns[round%sz.WSFan].WriteMessage(websocket.TextMessage, []byte("bcast * r"+strconv.Itoa(round))); err != nil {
			return nil, err
		}
		lat := make([]float64, 0, sz.WSFan)
		timeout := time.After(30 * time.Second)
		for len(lat) < sz.WSFan {
			select {
			case a := <-arrivals:
				if a.round != round {
					return nil, fmt.Errorf("round %d: a message of round %d", round, a.round)
				}
				lat = append(lat, a.at.Sub(t0).Seconds()*1000)
			case <-timeout:
				return nil, fmt.Errorf("round %d: %d of %d sockets got the broadcast in 30 s", round, len(lat), sz.WSFan)
			}
		}
		if round == 0 {
			continue
		}
		slices.Sort(lat)
		lasts = append(lasts, lat[len(lat)-1])
		p50s = append(p50s, lat[len(lat)/2])
		p99s = append(p99s, lat[min(len(lat)-1, len(lat)*99/100)])
		time.Sleep(50 * time.Millisecond)
	}
	last := benchkit.Median(lasts)
	worst := slices.Max(lasts)
	r.logf("ws_broadcast: %d sockets, %d rounds: last socket median %.2f ms, worst %.2f ms", sz.WSFan, sz.WSRounds, last, worst)
	res := &result{name: "ws_broadcast", met: last <= wsBroadcastGoalMs}
	res.add("last_ms", last)
	res.add("last_worst_ms", worst)
	res.add("p50_ms", benchkit.Median(p50s))
	res.add("p99_ms", benchkit.Median(p99s))
	res.add("sockets", sz.WSFan)
	res.add("rounds", sz.WSRounds)
	res.add("goal_max_last_ms", wsBroadcastGoalMs)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("%d sockets: last %.1f ms (p50 %.1f ms)", sz.WSFan, last, benchkit.Median(p50s))
	res.note = fmt.Sprintf("a message on one socket asks the shard of `edgeshard serve` to broadcast to its %d sockets: until the last client has it (median of %d rounds; worst %.1f ms)", sz.WSFan, sz.WSRounds, worst)
	return res, nil
}
