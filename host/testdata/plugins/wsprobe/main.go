// Command wsprobe is a test plugin of the host's WebSockets
// (host/websocket_test.go). It accepts upgrades at /ws, with the tags and
// attachment of its query, and answers text commands on each socket:
//
//	echo TEXT         sends "echo TEXT" back
//	whoami            sends "id=<id> att=<attachment> tags=<tags> events=<n>", n counting
//	                  the events of this instance (1 after a fresh start)
//	att VALUE         replaces the socket's attachment
//	bcast TAG TEXT    broadcasts TEXT to the sockets with TAG ("*": all)
//	close CODE        closes the socket with CODE
//	big N             sends N bytes; answers "err <message>" if the host refuses
//	put KEY VALUE     stores KEY, then sends "put KEY"
//	flood N K         sends K messages of N bytes; stores "flood" = "<sent> <first error>"
//	panic             crashes the instance
//
// Close and error events are stored as closed:<id> and error:<id>, read
// at GET /event?key=…; GET /sockets lists the sockets; GET /accept-plain
// calls ws_accept outside an upgrade; POST
// /auto?req=…&resp=… sets the auto-response; POST /broadcast?tag=… sends
// the body.
package main

import (
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/abi/sdk/ws"
)

// version is set by -ldflags -X to build a second version for swaps.
var version = "1"

// events counts the events of this instance: the test's proof that an
// instance started afresh.
var events int

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: fetch})
	ws.Serve(ws.Handlers{Message: message, Close: closed, Error: failed})
}

func fetch(req *sdk.Request) *sdk.Response {
	events++
	switch sdk.PathOnly(req) {
	case "/ws":
		if !ws.IsUpgrade(req) {
			return sdk.ErrorJSON(426, "upgrade_required", "connect with a WebSocket")
		}
		if sdk.Query(req, "refuse") != "" {
			return sdk.ErrorJSON(403, "refused", "not today")
		}
		var tags []string
		if t := sdk.Query(req, "tags"); t != "" {
			tags = strings.Split(t, ",")
		}
		id, err := ws.Accept(tags, []byte(sdk.Query(req, "att")))
		if err != nil {
			return sdk.ErrorJSON(503, "accept_failed", err.Error())
		}
		if err := ws.Send(id, []byte("welcome "+strconv.FormatUint(id, 10)+" v"+version)); err != nil {
			return sdk.ErrorJSON(500, "send_failed", err.Error())
		}
		return ws.Accepted()
	case "/accept-plain":
		if _, err := ws.Accept(nil, nil); err != nil {
			return sdk.ErrorJSON(400, "accept_failed", err.Error())
		}
		return sdk.Text(200, "accepted?")
	case "/sockets":
		socks, err := ws.List(sdk.Query(req, "tag"))
		if err != nil {
			return sdk.ErrorJSON(500, "list_failed", err.Error())
		}
		var b strings.Builder
		for _, s := range socks {
			b.WriteString(strconv.FormatUint(s.ID, 10) + " " + string(s.Attachment) + " " + strings.Join(s.Tags, ",") + "\n")
		}
		return sdk.Text(200, b.String())
	case "/auto":
		if err := ws.SetAutoResponse(sdk.Query(req, "req"), sdk.Query(req, "resp")); err != nil {
			return sdk.ErrorJSON(400, "auto_failed", err.Error())
		}
		return sdk.Text(200, "ok")
	case "/broadcast":
		n, err := ws.Broadcast(sdk.Query(req, "tag"), req.Body)
		if err != nil {
			return sdk.ErrorJSON(400, "broadcast_failed", err.Error())
		}
		return sdk.Text(200, strconv.Itoa(n))
	case "/event":
		v, ok, err := sdk.Storage().Get(sdk.Query(req, "key"))
		if err != nil || !ok {
			return sdk.ErrorJSON(404, "no_event", "none")
		}
		return sdk.Text(200, string(v))
	}
	return sdk.NotFound(req)
}

func message(s ws.Socket, msg []byte, binary bool) error {
	events++
	cmd, arg, _ := strings.Cut(string(msg), " ")
	reply := func(text string) error { return ws.Send(s.ID, []byte(text)) }
	switch cmd {
	case "echo":
		return reply("echo " + arg)
	case "whoami":
		return reply("id=" + strconv.FormatUint(s.ID, 10) + " att=" + string(s.Attachment) + " tags=" + strings.Join(s.Tags, ",") + " events=" + strconv.Itoa(events) + " v" + version)
	case "att":
		return ws.SetAttachment(s.ID, []byte(arg))
	case "bcast":
		tag, text, _ := strings.Cut(arg, " ")
		if tag == "*" {
			tag = ""
		}
		_, err := ws.Broadcast(tag, []byte(text))
		return err
	case "close":
		code, _ := strconv.Atoi(arg)
		if err := ws.Close(s.ID, code, "bye"); err != nil {
			return reply("err " + err.Error())
		}
		return nil
	case "big":
		n, _ := strconv.Atoi(arg)
		if err := ws.Send(s.ID, make([]byte, n)); err != nil {
			return reply("err " + err.Error())
		}
		return nil
	case "flood":
		ns, ks, _ := strings.Cut(arg, " ")
		n, _ := strconv.Atoi(ns)
		k, _ := strconv.Atoi(ks)
		sent, first := 0, ""
		for range k {
			if err := ws.Send(s.ID, make([]byte, n)); err != nil {
				first = err.Error()
				break
			}
			sent++
		}
		return sdk.Storage().Put("flood", []byte(strconv.Itoa(sent)+" "+first))
	case "put":
		k, v, _ := strings.Cut(arg, " ")
		if err := sdk.Storage().Put(k, []byte(v)); err != nil {
			return err
		}
		return reply("put " + k)
	case "panic":
		panic("wsprobe: asked to panic")
	}
	return reply("unknown " + cmd)
}

func closed(s ws.Socket, code int, reason string, clean bool) error {
	events++
	return sdk.Storage().Put("closed:"+strconv.FormatUint(s.ID, 10), []byte(strconv.Itoa(code)+" "+reason+" clean="+strconv.FormatBool(clean)+" att="+string(s.Attachment)))
}

func failed(s ws.Socket, msg string) error {
	events++
	return sdk.Storage().Put("error:"+strconv.FormatUint(s.ID, 10), []byte(msg))
}
