"""ComfyUI over HTTP: URL normalisation and the endpoints the queue uses (``urllib`` only;
nothing here knows about batches or workflows beyond a graph to submit).
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .errors import PromptRejected, QueueError, ServerUnreachable
from .rejections import describe_rejection

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
