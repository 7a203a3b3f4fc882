package main

import "github.com/edgeshard/edgeshard/abi/sdk"

// page serves a chat client for a browser: it connects to ws, relative
// to the page's own URL (/do/CHAT/<room>/), so one page serves every room.
func page(req *sdk.Request) *sdk.Response {
	r := sdk.Text(200, pageHTML)
	r.Header[0].Value = "text/html; charset=utf-8"
	return r
}

const pageHTML = `<!doctype html>
<meta charset="utf-8">
<title>edgeshard chat</title>
<style>
body { font: 15px system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
#log { border: 1px solid #ccc; height: 20em; overflow-y: auto; padding: .5em; }
.join, .leave { color: #888; } .whisper { color: #a50; } .error { color: #c00; }
</style>
<h1>edgeshard chat</h1>
<p><label>Name <input id="user" value="guest" size="12"></label> <button id="go">Join</button> <span id="state"></span></p>
<div id="log"></div>
<p><input id="text" size="50" placeholder="say something, or /to name text" disabled></p>
<script>
const $ = (id) => document.getElementById(id);
let sock;
function show(m) {
  const p = document.createElement("div");
  p.className = m.type;
  const who = m.user ? m.user : "";
  p.textContent = m.type === "join" ? who + " joined" : m.type === "leave" ? who + " left" :
    (m.type === "whisper" ? who + " (whisper): " : m.type === "error" ? "error: " : who + ": ") + m.text;
  $("log").appendChild(p);
  $("log").scrollTop = $("log").scrollHeight;
}
$("go").onclick = () => {
  if (sock) sock.close();
  const url = new URL("ws?user=" + encodeURIComponent($("user").value), location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  sock = new WebSocket(url);
  sock.onopen = () => { $("state").textContent = "connected"; $("text").disabled = false; $("text").focus(); };
  sock.onclose = (e) => { $("state").textContent = "closed (" + e.code + ")"; $("text").disabled = true; };
  sock.onmessage = (e) => { if (e.data !== "pong") show(JSON.parse(e.data)); };
};
$("text").onkeydown = (e) => {
  if (e.key === "Enter" && $("text").value) { sock.send($("text").value); $("text").value = ""; }
};
setInterval(() => { if (sock && sock.readyState === 1) sock.send("ping"); }, 30000);
</script>
`
