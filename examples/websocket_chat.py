"""A chat room on WebSockets, with both kinds of ``triowsgi.websocket`` handler.

Run it with::

    python examples/websocket_chat.py

then open http://127.0.0.1:8090/ in two browser tabs. The page joins the room over
``/ws`` (a blocking handler, eventlet.websocket's kind, in a thread of its own) or
``/ws-async`` (an ``async def`` handler in the connection's Trio task, no thread held);
both kinds share one room. Ctrl-C closes every WebSocket with 1001 and exits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import trio

import triowsgi
from triowsgi import websocket

PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>triowsgi chat</title>
<p>Join over <select id="path"><option>/ws</option><option>/ws-async</option></select>
<button id="join">join</button></p>
<form id="form"><input id="text" autocomplete="off" size="60"> <button>send</button></form>
<pre id="log"></pre>
<script>
let ws;
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
document.getElementById("join").onclick = () => {
  if (ws) ws.close();
  const path = document.getElementById("path").value;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}${path}`);
  ws.onopen = () => log(`* joined over ${path}`);
  ws.onmessage = (event) => log(event.data);
  ws.onclose = (event) => log(`* closed (${event.code})`);
};
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(text.value);
  text.value = "";
};
</script>
"""

Deliver = Callable[[str], object]


class Room:
    """Who is in the room, and how to reach each one from any thread but Trio's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[int, Deliver] = {}

    def join(self, member: int, deliver: Deliver) -> None:
        with self._lock:
            self._members[member] = deliver

    def leave(self, member: int) -> None:
        with self._lock:
            self._members.pop(member, None)

    def publish(self, text: str) -> None:
        with self._lock:
            members = list(self._members.items())
        for member, deliver in members:
            try:
                deliver(text)
            except OSError:  # websocket.ConnectionClosed: that one left
                self.leave(member)


room = Room()


@websocket.WebSocketWSGI
def chat(ws: websocket.WebSocket) -> None:
    """A blocking handler, as on eventlet: its own thread for as long as it is open."""
    name = f"guest{id(ws) % 1000} (sync)"
    room.join(id(ws), ws.send)  # ws.send is thread-safe: anyone may deliver to it
    room.publish(f"* {name} joined")
    try:
        while (message := ws.wait()) is not None:
            room.publish(f"{name}: {message}")
    finally:
        room.leave(id(ws))
        room.publish(f"* {name} left")


@websocket.WebSocketWSGI
async def chat_async(ws: websocket.AsyncWebSocket) -> None:
    """An async handler: runs in the connection's Trio task and holds no thread while
    it waits. The room is reached through Trio's own worker threads."""
    name = f"guest{id(ws) % 1000} (async)"
    token = trio.lowlevel.current_trio_token()

    def deliver(text: str) -> None:
        trio.from_thread.run(ws.send, text, trio_token=token)

    room.join(id(ws), deliver)
    await trio.to_thread.run_sync(room.publish, f"* {name} joined")
    try:
        async for message in ws:
            await trio.to_thread.run_sync(room.publish, f"{name}: {message}")
    finally:
        room.leave(id(ws))
        with trio.CancelScope(shield=True):  # say goodbye even during a shutdown
            await trio.to_thread.run_sync(room.publish, f"* {name} left")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/ws":
        return chat(environ, start_response)
    if environ["PATH_INFO"] == "/ws-async":
        return chat_async(environ, start_response)
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))],
    )
    return [PAGE]


if __name__ == "__main__":
    trio.run(triowsgi.serve, app, 8090, "127.0.0.1")
