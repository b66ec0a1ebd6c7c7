"""ComfyUI over HTTP: URL normalisation, the endpoints the queue uses, the ``/ws`` listener.

Only the standard library is used, for HTTP (``urllib``) and for the websocket (a minimal
RFC 6455 client); nothing here knows about batches or workflows beyond a graph to submit.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .errors import PromptRejected, QueueError, ServerUnreachable
from .graph import describe_rejection

DEFAULT_SERVER = "http://127.0.0.1:8188"
USER_AGENT = f"facediffuser-queue/{__version__}"


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no answer in time"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def normalize_url(url: str) -> str:
    """``host:port`` or ``http(s)://host:port[/prefix]`` -> ``http(s)://host:port[/prefix]``."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise QueueError(
            f"--server {url!r} is not a ComfyUI address: give http://HOST:PORT, "
            "e.g. http://127.0.0.1:8188"
        )
    return url


# =========================================================================== HTTP client


class ComfyClient:
    """The handful of ComfyUI endpoints the queue uses (stdlib ``urllib``, no session)."""

    def __init__(self, url: str, *, timeout: float = 30.0):
        self.url = normalize_url(url)
        self.timeout = timeout

    def _request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except (OSError, http.client.HTTPException):
                body = b""
            return exc.code, body
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise ServerUnreachable(self.url, _short_error(exc)) from exc

    def _json(self, status: int, raw: bytes, what: str) -> Any:
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise ServerUnreachable(
                self.url, f"{what} answered HTTP {status} with something that is not JSON"
            ) from exc

    def get_json(self, path: str, *, timeout: float | None = None) -> Any:
        status, raw = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerUnreachable(self.url, f"GET {path} answered HTTP {status}")
        return self._json(status, raw, f"GET {path}")

    def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        status, raw = self._request(
            "POST",
            path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            return status, json.loads(raw) if raw.strip() else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    # ------------------------------------------------------------------ endpoints

    def object_info(self, class_type: str) -> dict | None:
        """``/object_info/<class>``: the node's inputs, or None if the server lacks it."""
        info = self.get_json("/object_info/" + urllib.parse.quote(class_type, safe=""))
        return info.get(class_type) if isinstance(info, dict) else None

    def queue_remaining(self, *, timeout: float | None = None) -> int:
        """Prompts running or waiting on the server (``GET /prompt``), everyone's."""
        info = self.get_json("/prompt", timeout=timeout)
        try:
            return int(info["exec_info"]["queue_remaining"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ServerUnreachable(self.url, "GET /prompt has no exec_info") from exc

    def queued_ids(self) -> set[str]:
        """Prompt ids running or pending (``GET /queue``)."""
        info = self.get_json("/queue") or {}
        ids = set()
        for section in ("queue_running", "queue_pending"):
            for entry in info.get(section) or []:
                if isinstance(entry, list) and len(entry) > 1:
                    ids.add(str(entry[1]))
        return ids

    def history(self, prompt_id: str) -> dict | None:
        entry = (self.get_json("/history/" + urllib.parse.quote(prompt_id, safe="")) or {}).get(
            prompt_id
        )
        return entry if isinstance(entry, dict) else None

    def submit(self, graph: dict, *, client_id: str, prompt_id: str) -> dict:
        status, body = self.post_json(
            "/prompt", {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        )
        if status == 200 and isinstance(body, dict) and "prompt_id" in body:
            return body
        if status == 400:
            body = body if isinstance(body, dict) else {"error": str(body)[:500]}
            raise PromptRejected(describe_rejection(body, graph), body)
        raise ServerUnreachable(self.url, f"POST /prompt answered HTTP {status}: {str(body)[:200]}")

    def upload_image(self, path: Path, name: str) -> str:
        """Upload to the server's input folder (``/upload/image``); returns the name to use."""
        boundary = "----facediffuser" + uuid.uuid4().hex
        parts = []
        for key, value in (("overwrite", "true"), ("type", "input")):
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + Path(path).read_bytes()
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        status, raw = self._request(
            "POST",
            "/upload/image",
            data=b"".join(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=max(self.timeout, 60.0),
        )
        if status != 200:
            raise ServerUnreachable(self.url, f"POST /upload/image answered HTTP {status}")
        body = self._json(status, raw, "POST /upload/image") or {}
        sub = body.get("subfolder") or ""
        return f"{sub}/{body['name']}" if sub else str(body.get("name", name))

    def view(self, filename: str, subfolder: str, kind: str) -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        status, raw = self._request("GET", "/view?" + query, timeout=max(self.timeout, 60.0))
        if status != 200:
            raise ServerUnreachable(self.url, f"GET /view of {filename} answered HTTP {status}")
        return raw

    def interrupt(self, prompt_id: str | None = None) -> None:
        self.post_json("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def delete_queued(self, prompt_ids: Sequence[str]) -> None:
        self.post_json("/queue", {"delete": list(prompt_ids)})


def fetch_object_info(client: ComfyClient, classes: Sequence[str]) -> dict[str, dict]:
    """``/object_info`` of just these node classes (missing ones are left out)."""
    info = {}
    for kind in sorted(set(classes)):
        found = client.object_info(kind)
        if found is not None:
            info[kind] = found
    return info


# =========================================================================== websocket

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
