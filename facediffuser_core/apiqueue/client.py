"""ComfyUI over HTTP: server addresses and the endpoints the queue uses (``urllib``, as
ComfyUI's own API examples; nothing here knows about batches).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .graph import QueueError
from .rejections import describe_rejection

DEFAULT_SERVER = "http://127.0.0.1:8188"
USER_AGENT = f"facediffuser-queue/{__version__}"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d+)?(/.*)?$")


class ServerUnreachable(QueueError):
    """No usable HTTP answer from a server (refused, reset, timed out, not ComfyUI)."""

    def __init__(self, url: str, reason: str):
        super().__init__(
            f"ComfyUI at {url} is unreachable ({reason}): check that it is running and "
            "listening there (python main.py --listen <address> --port <port>)"
        )
        self.url = url
        self.reason = reason


class PromptRejected(QueueError):
    """ComfyUI refused a prompt at validation (HTTP 400, usually with ``node_errors``)."""

    def __init__(self, message: str, body: Any):
        super().__init__(message)
        self.body = body


def server_url(text: str) -> str:
    """``host:port`` or ``http(s)://host:port[/prefix]`` -> ``http(s)://host:port[/prefix]``;
    QueueError naming the problem for anything else (``htp:/x``, ``ftp://x``, ``host:99999``)."""
    url = str(text).strip().rstrip("/")
    fix = "give http://HOST:PORT, e.g. http://127.0.0.1:8188"
    scheme = _SCHEME.match(url)
    if "://" not in url and scheme and not _HOST.match(url):
        raise QueueError(
            f"--server {text!r} is not a ComfyUI address ({scheme.group(0)!r} is not http:// "
            f"or https://): {fix}"
        )
    if "://" not in url:
        if not _HOST.match(url):
            raise QueueError(f"--server {text!r} is not a ComfyUI address: {fix}")
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise QueueError(
            f"--server {text!r} is not a ComfyUI address (scheme {parts.scheme!r}): {fix}"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or port == 0 or parts.query or parts.fragment:
        raise QueueError(f"--server {text!r} is not a ComfyUI address: {fix}")
    return url


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    known = {
        ConnectionRefusedError: "connection refused",
        TimeoutError: "no answer in time",
        socket.timeout: "no answer in time",
        http.client.RemoteDisconnected: "the server closed the connection",
        ConnectionResetError: "connection reset",
    }
    for kind, text in known.items():
        if isinstance(exc, kind):
            return text
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


class ComfyClient:
    """The handful of ComfyUI endpoints the queue uses."""

    def __init__(self, url: str, *, timeout: float = 30.0):
        self.url = server_url(url)
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """(status, body); ServerUnreachable when no HTTP answer came."""
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
                return exc.code, exc.read()
            except (OSError, http.client.HTTPException):
                return exc.code, b""
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise ServerUnreachable(self.url, _short_error(exc)) from exc

    def get_json(self, path: str, *, timeout: float | None = None) -> Any:
        status, raw = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerUnreachable(self.url, f"GET {path} answered HTTP {status}")
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:
            raise ServerUnreachable(
                self.url, f"GET {path} answered with something that is not JSON (not ComfyUI?)"
            ) from None

    def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        status, raw = self.request(
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
            raise ServerUnreachable(
                self.url, "GET /prompt has no exec_info (not ComfyUI?)"
            ) from exc

    def queued_ids(self) -> set[str]:
        """Prompt ids running or pending (``GET /queue``)."""
        info = self.get_json("/queue") or {}
        return {
            str(entry[1])
            for section in ("queue_running", "queue_pending")
            for entry in info.get(section) or []
            if isinstance(entry, list) and len(entry) > 1
        }

    def history(self, prompt_id: str) -> dict | None:
        answer = self.get_json("/history/" + urllib.parse.quote(prompt_id, safe="")) or {}
        entry = answer.get(prompt_id) if isinstance(answer, dict) else None
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
        fields = "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
            for key, value in (("overwrite", "true"), ("type", "input"))
        )
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        body = (
            (fields + head).encode() + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        )
        status, raw = self.request(
            "POST",
            "/upload/image",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=max(self.timeout, 60.0),
        )
        try:
            answer = json.loads(raw) if status == 200 else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "name" not in answer:
            raise ServerUnreachable(self.url, f"POST /upload/image answered HTTP {status}")
        sub = answer.get("subfolder") or ""
        return f"{sub}/{answer['name']}" if sub else str(answer["name"])

    def view(self, filename: str, subfolder: str, kind: str) -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        status, raw = self.request("GET", "/view?" + query, timeout=max(self.timeout, 60.0))
        if status != 200:
            raise ServerUnreachable(self.url, f"GET /view of {filename} answered HTTP {status}")
        return raw

    def cancel(self, prompt_ids: Sequence[str]) -> None:
        """Take our prompts out of the server's queue and interrupt them if running."""
        self.post_json("/queue", {"delete": list(prompt_ids)})
        for prompt_id in prompt_ids:
            self.post_json("/interrupt", {"prompt_id": prompt_id})
