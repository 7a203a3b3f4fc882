//go:build !wasip1

// Command client is a terminal client of the chat example: it joins a
// room, prints every line of it and sends each line typed.
//
//	go run ./examples/chat/client -url ws://127.0.0.1:8787/do/CHAT/lobby/ws -user ann
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"

	"github.com/gorilla/websocket"
)

func main() {
	addr := flag.String("url", "ws://127.0.0.1:8787/do/CHAT/lobby/ws", "the room's WebSocket URL")
	user := flag.String("user", "guest", "your name (1-32 of A-Z a-z 0-9 _ - . : @)")
	flag.Parse()
	u, err := url.Parse(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	q := u.Query()
	q.Set("user", *user)
	u.RawQuery = q.Encode()
	c, resp, err := websocket.DefaultDialer.Dial(u.String(), nil)
	if err != nil {
		if resp != nil {
			fmt.Fprintf(os.Stderr, "refused: %s\n", resp.Status)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if err := c.WriteMessage(websocket.TextMessage, in.Bytes()); err != nil {
				return
			}
		}
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	}()
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			fmt.Fprintln(os.Stderr, "closed:", err)
			return
		}
		var l struct{ Type, User, Text string }
		if json.Unmarshal(b, &l) != nil {
			fmt.Println(string(b))
			continue
		}
		switch l.Type {
		case "join":
			fmt.Printf("* %s joined\n", l.User)
		case "leave":
			fmt.Printf("* %s left\n", l.User)
		case "error":
			fmt.Println("! " + l.Text)
		case "whisper":
			fmt.Printf("%s (whisper): %s\n", l.User, l.Text)
		default:
			fmt.Printf("%s: %s\n", l.User, l.Text)
		}
	}
}
