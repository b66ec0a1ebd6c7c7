"""ComfyUI's ``/ws`` progress messages: a minimal RFC 6455 websocket client (standard library
only) and the listener thread that feeds a server's events to the queue.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from .client import USER_AGENT

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocket:
    """A minimal RFC 6455 client: text messages in, close/pong out (no extensions)."""

    def __init__(self, url: str, *, timeout: float = 5.0):
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        self.sock = sock
        self._buf = b""
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        key = base64.b64encode(os.urandom(16)).decode()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nUser-Agent: {USER_AGENT}\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self._buf:
            chunk = sock.recv(4096)
            if not chunk or len(self._buf) > 65536:
                self.close()
                raise ConnectionError("websocket handshake: no answer")
            self._buf += chunk
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        accept = hashlib.sha1((key + _WS_GUID).encode()).digest()
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        if (
            " 101 " not in lines[0] + " "
            or headers.get("sec-websocket-accept") != base64.b64encode(accept).decode()
        ):
            self.close()
            raise ConnectionError(f"websocket handshake refused: {lines[0]}")

    def settimeout(self, seconds: float) -> None:
        self.sock.settimeout(seconds)

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _frame(self) -> tuple[bool, int, bytes] | None:
        """One complete frame from the buffer, or None (the buffer is left untouched)."""
        buf = self._buf
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, n, pos = bool(buf[1] & 0x80), buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, pos = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, pos = int.from_bytes(buf[2:10], "big"), 10
        mask = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            mask, pos = buf[pos : pos + 4], pos + 4
        if len(buf) < pos + n:
            return None
        payload = buf[pos : pos + n]
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._buf = buf[pos + n :]
        return fin, opcode, payload

    def recv(self) -> str | None:
        """The next text message; None once the server closes. Raises TimeoutError/OSError."""
        while True:
            frame = self._frame()
            if frame is None:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None
                self._buf += chunk
                continue
            fin, opcode, payload = frame
            if opcode == 0x8:
                try:
                    self._send(0x8, payload[:2])
                except OSError:
                    pass
                return None
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode in (0x1, 0x2):
                self._fragments, self._fragment_opcode = [payload], opcode
            elif opcode == 0x0:
                self._fragments.append(payload)
            if fin and self._fragments:
                data, kind = b"".join(self._fragments), self._fragment_opcode
                self._fragments = []
                if kind == 0x1:
                    return data.decode("utf-8", "replace")
                # binary frames are previews: not used

    def close(self) -> None:
        try:
            self._send(0x8, (1000).to_bytes(2, "big"))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class _Listener(threading.Thread):
    """Reads ComfyUI's ``/ws`` events for our client id; reconnects a bounded number of times."""

    def __init__(
        self,
        url: str,
        client_id: str,
        on_event: Callable[[str, dict], None],
        stop: threading.Event,
        *,
        attempts: int = 8,
        backoff_max: float = 30.0,
    ):
        super().__init__(daemon=True, name=f"fdq-ws-{url}")
        scheme = "wss" if url.startswith("https") else "ws"
        self.ws_url = f"{scheme}{url[url.index(':') :]}/ws?clientId={client_id}"
        self.on_event, self.stop, self.attempts = on_event, stop, attempts
        self.backoff_max = backoff_max
        self.connected = False
        self.ever_connected = False

    def run(self) -> None:
        failures = 0
        for _ in range(self.attempts * 4):  # a bounded number of (re)connections
            if self.stop.is_set() or failures >= self.attempts:
                return
            try:
                ws = WebSocket(self.ws_url, timeout=5.0)
            except (OSError, ConnectionError):
                failures += 1
                self.stop.wait(min(self.backoff_max, 0.5 * 2**failures))
                continue
            failures = 0
            if self.ever_connected:  # the server may have restarted: queued prompts lost
                self.on_event("reconnected", {})
            self.connected = self.ever_connected = True
            ws.settimeout(0.5)
            try:
                while not self.stop.is_set():
                    try:
                        message = ws.recv()
                    except TimeoutError:
                        continue
                    if message is None:
                        break
                    try:
                        event = json.loads(message)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and isinstance(event.get("data"), dict):
                        self.on_event(str(event.get("type")), event["data"])
            except OSError:
                pass
            finally:
                self.connected = False
                ws.close()
            self.stop.wait(0.5)
