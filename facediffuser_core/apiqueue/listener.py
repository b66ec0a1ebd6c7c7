"""ComfyUI's ``/ws`` messages (step progress, "prompt finished") through ``websocket-client``,
the library ComfyUI's own API example uses. A listener is optional: without one (``--no-ws``,
``websocket-client`` not installed, or a server whose websocket does not connect) the queue
polls ``/history``.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from .client import USER_AGENT


def websocket_available() -> bool:
    """Is ``websocket-client`` installed (a pip dependency; not in requirements.txt)?"""
    return importlib.util.find_spec("websocket") is not None


def websocket_url(url: str, client_id: str) -> str:
    """``http://host:port/prefix`` -> ``ws://host:port/prefix/ws?clientId=...``."""
    parts = urllib.parse.urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = urllib.parse.urlencode({"clientId": client_id})
    return f"{scheme}://{parts.netloc}{parts.path}/ws?{query}"


class Listener(threading.Thread):
    """Feeds one server's ``/ws`` messages to ``on_event(type, data)``, reconnecting with
    backoff until ``stop`` is set; after a reconnection it sends ``("reconnected", {})``
    (messages may have been missed)."""

    def __init__(
        self,
        url: str,
        client_id: str,
        on_event: Callable[[str, dict], None],
        stop: threading.Event,
        *,
        backoff_max: float = 30.0,
    ):
        super().__init__(daemon=True, name=f"fdq-ws-{url}")
        self.address = websocket_url(url, client_id)
        self.on_event = on_event
        self.stop = stop
        self.backoff_max = backoff_max
        self.ever_connected = False

    def run(self) -> None:
        import websocket

        delay = 0.5
        while not self.stop.is_set():
            try:
                ws = websocket.create_connection(
                    self.address, timeout=5, header=[f"User-Agent: {USER_AGENT}"]
                )
            except (OSError, websocket.WebSocketException):
                self.stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            if self.ever_connected:
                self.on_event("reconnected", {})
            self.ever_connected, delay = True, 0.5
            try:
                self._read(ws)
            finally:
                ws.close()

    def _read(self, ws: Any) -> None:
        import websocket

        ws.settimeout(0.5)
        while not self.stop.is_set():
            try:
                message = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                return
            if not isinstance(message, str):
                continue  # binary: preview images
            try:
                parsed = json.loads(message)
            except ValueError:
                continue
            if isinstance(parsed, dict) and isinstance(parsed.get("data"), dict):
                self.on_event(str(parsed.get("type")), parsed["data"])
