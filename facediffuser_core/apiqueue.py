"""``facediffuser queue``: run the Face-diffuser workflows through ComfyUI's HTTP API.

A batch client, not a scheduler: every ComfyUI server keeps its own prompt queue, and this
module only decides which server gets the next item (the one with the shortest queue, at
most ``depth`` of our prompts on each). It

* loads an API-format workflow (default: the shipped one- or two-person graph) or a UI
  workflow, converted with the server's ``/object_info`` (:func:`ui_to_api`);
* sets prompt, reference photos (uploaded with ``/upload/image``), seed, steps, cfg, stage
  boundaries, size and batch size *by meaning*: it finds the nodes by class, never by id
  (:func:`apply_settings`);
* reads a batch file (CSV or JSONL, :func:`read_batch`), validates every row before
  anything is queued, and records each item in ``OUT/manifest.json`` (written atomically),
  so a second run resumes: finished items are skipped, prompts still queued on a server are
  collected, not queued again;
* survives dropped connections and server restarts (bounded retries; a prompt id chosen by
  us makes "did my POST arrive?" answerable, so nothing that succeeded is queued twice);
* shows progress (steps from the ``/ws`` websocket when it connects, polling otherwise).

Only the standard library is used for HTTP and the websocket; ``tqdm`` draws the bar.
"""

from __future__ import annotations

import argparse
import base64
import copy
import csv
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import FaceDiffuserError

DEFAULT_SERVER = "http://127.0.0.1:8188"
WORKFLOW_DIR = Path(__file__).resolve().parents[1] / "workflows" / "api"
ONE_PERSON = "facediffuser_one_person.json"
TWO_PEOPLE = "facediffuser_two_people.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "facediffuser-queue/1"
MARKER = "<|image|>"
MAX_PEOPLE = 4
USER_AGENT = f"facediffuser-queue/{__version__}"
QUEUE_CHECK_S = 5.0  # how often a running prompt is looked for in /queue (lost by a restart?)


class QueueError(FaceDiffuserError):
    """A workflow, batch file or server problem; the message names the fix."""


class ServerUnreachable(QueueError):
    """No HTTP answer from a server (refused, reset, timed out)."""

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


# =========================================================================== workflows

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
SAMPLERS = ("FaceDiffuserKSampler", "FaceDiffuserSNFGuider")

# what each setting means, as (node class, input) pairs
TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "prompt": (("FaceDiffuserSubjectEncode", "prompt"),),
    "seed": (("FaceDiffuserKSampler", "seed"), ("RandomNoise", "noise_seed")),
    "steps": (("FaceDiffuserKSampler", "steps"), ("BasicScheduler", "steps")),
    "cfg": (("FaceDiffuserKSampler", "cfg"), ("FaceDiffuserSNFGuider", "cfg")),
    "scene_end": (("FaceDiffuserKSampler", "scene_end"), ("FaceDiffuserSNFGuider", "scene_end")),
    "fusion_end": (("FaceDiffuserKSampler", "fusion_end"), ("FaceDiffuserSNFGuider", "fusion_end")),
    "width": (("EmptyLatentImage", "width"),),
    "height": (("EmptyLatentImage", "height"),),
    "batch_size": (("EmptyLatentImage", "batch_size"),),
}


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _title(graph: Mapping[str, Any], node_id: str, class_type: str | None = None) -> str:
    node = graph.get(node_id) or {}
    return (node.get("_meta") or {}).get("title") or node.get("class_type") or class_type or "?"


def _node_label(graph: Mapping[str, Any], node_id: str) -> str:
    return f"node {node_id} '{_title(graph, node_id)}'"


def is_ui_workflow(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("nodes"), list) and "links" in doc


def load_workflow(path: str | os.PathLike) -> dict:
    """An API graph or a UI workflow (as saved by ComfyUI), checked for its basic shape."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QueueError(f"workflow {path} does not exist: give an existing .json file") from None
    except (OSError, ValueError) as exc:
        raise QueueError(
            f"workflow {path} is not readable JSON ({exc}): save or export it again from ComfyUI"
        ) from None
    if is_ui_workflow(doc):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("prompt"), dict):
        doc = doc["prompt"]  # a /prompt request body
    if (
        not isinstance(doc, dict)
        or not doc
        or not all(isinstance(n, dict) and "class_type" in n for n in doc.values())
    ):
        raise QueueError(
            f"workflow {path} is neither an API-format graph nor a UI workflow: in ComfyUI use "
            "Workflow > Export (API), or Save for the UI format"
        )
    for node in doc.values():
        node.setdefault("inputs", {})
    return doc


def input_specs(info: Mapping[str, Any]) -> list[tuple[str, list]]:
    """(name, spec) of a node's required then optional inputs, in the server's order."""
    inputs = info.get("input") or {}
    order = info.get("input_order") or {k: list(v) for k, v in inputs.items()}
    specs = []
    for section in ("required", "optional"):
        for name in order.get(section) or []:
            spec = (inputs.get(section) or {}).get(name)
            if spec is not None:
                specs.append((name, spec if isinstance(spec, list) else [spec]))
    return specs


def is_widget(spec: Sequence[Any]) -> bool:
    kind = spec[0] if spec else None
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _spec_options(spec: Sequence[Any]) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _combo_values(spec: Sequence[Any]) -> list | None:
    if spec and isinstance(spec[0], list):
        return spec[0]
    if spec and spec[0] == "COMBO":
        options = _spec_options(spec).get("options")
        return options if isinstance(options, list) else None
    return None


def ui_to_api(ui: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict:
    """Convert a UI (litegraph) workflow to the API format, as the frontend's Export (API).

    Widget values are matched positionally to the node's widget inputs in ``/object_info``
    order (required, then optional), skipping the extra value the frontend stores after a
    seed-like widget (``control_after_generate``) and after an image-upload widget; linked
    inputs become ``[source_id, slot]``. Reroutes are followed, bypassed nodes pass their
    matching input through, muted nodes and notes are dropped.
    """
    if (ui.get("definitions") or {}).get("subgraphs"):
        raise QueueError(
            "this UI workflow contains subgraphs, which the converter does not expand: open it "
            "in ComfyUI and use Workflow > Export (API), then queue that file"
        )
    nodes = {str(n["id"]): n for n in ui.get("nodes") or []}
    links: dict[Any, tuple[str, int]] = {}
    for link in ui.get("links") or []:
        if isinstance(link, dict):
            links[link["id"]] = (str(link["origin_id"]), int(link["origin_slot"]))
        else:
            links[link[0]] = (str(link[1]), int(link[2]))

    def source(link_id: Any, depth: int = 0) -> list | None:
        if link_id is None or link_id not in links or depth > 64:
            return None
        origin, slot = links[link_id]
        node = nodes.get(origin)
        if node is None or node.get("mode", 0) == 2 or node.get("type") == "PrimitiveNode":
            return None
        if node.get("type") == "Reroute":
            ins = node.get("inputs") or []
            return source(ins[0].get("link"), depth + 1) if ins else None
        if node.get("mode", 0) == 4:  # bypassed: the first input of the output's type
            outs = node.get("outputs") or []
            kind = outs[slot].get("type") if slot < len(outs) else None
            for inp in node.get("inputs") or []:
                if inp.get("link") is not None and inp.get("type") == kind:
                    return source(inp["link"], depth + 1)
            return None
        return [origin, slot]

    api: dict[str, dict] = {}
    for node_id, node in nodes.items():
        kind = node.get("type")
        if kind in VIRTUAL_NODES or node.get("mode", 0) in (2, 4):
            continue
        info = object_info.get(kind)
        title = node.get("title") or (info or {}).get("display_name") or kind
        if info is None:
            raise QueueError(
                f"node {node_id} '{title}' is a {kind}, which the server does not have: "
                "install the custom node pack that provides it there and restart ComfyUI"
            )
        widgets = node.get("widgets_values")
        widgets = widgets if isinstance(widgets, (list, dict)) else []
        ui_inputs = {i.get("name"): i for i in node.get("inputs") or []}
        inputs: dict[str, Any] = {}
        pos = 0
        for name, spec in input_specs(info):
            link = (ui_inputs.get(name) or {}).get("link")
            linked = source(link) if link is not None else None
            if not is_widget(spec):
                if linked is not None:
                    inputs[name] = linked
                continue
            options = _spec_options(spec)
            if isinstance(widgets, dict):
                value, present = widgets.get(name), name in widgets
            else:
                present = pos < len(widgets)
                value = widgets[pos] if present else None
                pos += 1
                nxt = widgets[pos] if pos < len(widgets) else object()
                if options.get("control_after_generate") and nxt in CONTROL_VALUES:
                    pos += 1
                elif options.get("image_upload") and (nxt == "image" or nxt is None):
                    pos += 1
            if linked is not None:
                inputs[name] = linked
            elif present:
                inputs[name] = value
            elif "default" in options:
                inputs[name] = options["default"]
        api[node_id] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}
    if not api:
        raise QueueError("the UI workflow has no nodes to run: save a workflow with nodes in it")
    return api


def fetch_object_info(client: ComfyClient, classes: Sequence[str]) -> dict[str, dict]:
    """``/object_info`` of just these node classes (missing ones are left out)."""
    info = {}
    for kind in sorted(set(classes)):
        found = client.object_info(kind)
        if found is not None:
            info[kind] = found
    return info


def server_problems(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[str]:
    """Node classes of ``graph`` that the server does not have (checked once per server).

    Missing *models* are found by ComfyUI's own validation when the first item is queued
    (see :func:`is_server_problem`): loaders may accept names their list does not show.
    """
    problems = []
    for node_id, node in graph.items():
        kind = node["class_type"]
        if object_info.get(kind) is None:
            problems.append(
                f"{_node_label(graph, node_id)} needs node type {kind}, which is not installed "
                "there: install its custom node pack and restart ComfyUI"
            )
    return problems


MODEL_INPUTS = {
    "model_name",
    "ckpt_name",
    "unet_name",
    "vae_name",
    "clip_name",
    "clip_name1",
    "clip_name2",
    "lora_name",
    "control_net_name",
    "style_model_name",
    "upscale_model_name",
    "pack",
}


def is_server_problem(body: Mapping[str, Any]) -> bool:
    """Does a 400 from ``POST /prompt`` say the *server* lacks something (model, node type)?

    Such an item is given to another server instead of failing; anything else (a wrong
    value in the item) fails the item.
    """
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    node_errors = body.get("node_errors") or {}
    if not node_errors:
        return error.get("type") == "missing_node_type" or "does not exist" in str(
            error.get("message", "")
        )
    for entry in node_errors.values():
        for err in entry.get("errors") or [{}]:
            name = (err.get("extra_info") or {}).get("input_name", "")
            if err.get("type") not in ("value_not_in_list", "custom_validation_failed"):
                return False
            if name not in MODEL_INPUTS:
                return False
    return True


def _missing_hint(class_type: str, name: str) -> str:
    if class_type.startswith("FaceDiffuserLoad"):
        return (
            "put the model under ComfyUI/models/facediffuser/ there (Hugging Face "
            "CodeGoat24/Face-diffuser, folders SDM/ and TDM/) and restart ComfyUI"
        )
    if class_type == "FaceDiffuserFaceAnalysisLoader":
        return "unzip the insightface pack into ComfyUI/models/insightface/models/ there"
    if "name" in name or "ckpt" in name or "model" in name:
        return "copy the model file into the matching ComfyUI/models/ folder there"
    return "pick one of the offered values"


# ------------------------------------------------------------------ overrides by meaning


@dataclass(frozen=True)
class PersonChain:
    """The nodes from a ``LoadImage`` to a Subject Encode ``person_i`` input (image last)."""

    index: int
    nodes: tuple[str, ...]  # direct source first, the LoadImage last

    @property
    def load_image(self) -> str:
        return self.nodes[-1]


def _nodes_of(graph: Mapping[str, Any], class_type: str) -> list[str]:
    return sorted(
        (k for k, n in graph.items() if n.get("class_type") == class_type),
        key=lambda k: (len(k), k),
    )


def person_chains(graph: Mapping[str, Any]) -> list[PersonChain]:
    """Which ``LoadImage`` feeds ``person_1`` ... of the (first) Subject Encode node."""
    encoders = _nodes_of(graph, "FaceDiffuserSubjectEncode")
    if not encoders:
        return []
    inputs = graph[encoders[0]]["inputs"]
    chains = []
    for i in range(1, MAX_PEOPLE + 1):
        link = inputs.get(f"person_{i}")
        if not _is_link(link):
            continue
        if len(chains) != i - 1:
            raise QueueError(
                f"{_node_label(graph, encoders[0])} has person_{i} wired but not "
                f"person_{len(chains) + 1}: wire the people in order, from person_1"
            )
        chain, node_id = [], str(link[0])
        for _ in range(32):
            node = graph.get(node_id)
            if node is None:
                raise QueueError(f"the workflow links to node {node_id}, which is not in it")
            chain.append(node_id)
            if node["class_type"] == "LoadImage":
                break
            linked = {k: v for k, v in node["inputs"].items() if _is_link(v)}
            pick = next((linked[k] for k in ("images", "image", "pixels") if k in linked), None)
            if pick is None and len(linked) == 1:
                pick = next(iter(linked.values()))
            if pick is None:
                raise QueueError(
                    f"cannot tell which Load Image node feeds person_{i}: "
                    f"{_node_label(graph, node_id)} has no 'images' input; feed each person "
                    "from a Load Image node (directly or through Face Crop)"
                )
            node_id = str(pick[0])
        else:
            raise QueueError(f"person_{i} is not fed by a Load Image node within 32 nodes")
        chains.append(PersonChain(i, tuple(chain)))
    bottoms = [c.load_image for c in chains]
    if len(set(bottoms)) != len(bottoms):
        raise QueueError(
            "two people of the workflow come from the same Load Image node: give each person "
            "its own Load Image node"
        )
    return chains


def _consumers(graph: Mapping[str, Any], node_id: str) -> list[tuple[str, str]]:
    return [
        (k, name)
        for k, n in graph.items()
        for name, v in n["inputs"].items()
        if _is_link(v) and str(v[0]) == node_id
    ]


def _set_people(graph: dict, names: Sequence[str]) -> None:
    """Point the people's Load Image nodes at ``names``, adding or removing people."""
    chains = person_chains(graph)
    if not chains:
        raise QueueError(
            "the workflow has no Face-diffuser Subject Encode node with person inputs to take "
            "the reference images: use a Face-diffuser workflow (see workflows/)"
        )
    encoder = graph[_nodes_of(graph, "FaceDiffuserSubjectEncode")[0]]
    wanted = len(names)
    if wanted > MAX_PEOPLE:
        raise QueueError(f"{wanted} references given; Face-diffuser takes at most {MAX_PEOPLE}")
    # fewer people: unwire person_k everywhere it is wired from the same source, prune
    for chain in chains[wanted:]:
        source = encoder["inputs"][f"person_{chain.index}"]
        for node in graph.values():
            if node["inputs"].get(f"person_{chain.index}") == source:
                del node["inputs"][f"person_{chain.index}"]
        for _ in range(len(chain.nodes) + 1):
            orphans = [k for k in chain.nodes if k in graph and not _consumers(graph, k)]
            if not orphans:
                break
            for k in orphans:
                del graph[k]
    chains = chains[:wanted]
    # more people: copy person_1's chain (Load Image, Face Crop, ...) for each new person
    if wanted > len(chains):
        base = chains[0]
        source = encoder["inputs"]["person_1"]
        next_id = max((int(k) for k in graph if k.isdigit()), default=0) + 1
        for i in range(len(chains) + 1, wanted + 1):
            ids = {}
            for old in base.nodes:
                ids[old] = str(next_id)
                next_id += 1
            for old in base.nodes:
                clone = copy.deepcopy(graph[old])
                for name, value in clone["inputs"].items():
                    if _is_link(value) and str(value[0]) in ids:
                        clone["inputs"][name] = [ids[str(value[0])], value[1]]
                title = (clone.get("_meta") or {}).get("title")
                if title:
                    clone["_meta"]["title"] = re.sub(r"\b1\b", str(i), title)
                graph[ids[old]] = clone
            new_source = [ids[str(source[0])], source[1]]
            for node in graph.values():
                if node["inputs"].get("person_1") == source:
                    node["inputs"][f"person_{i}"] = list(new_source)
            chains.append(PersonChain(i, tuple(ids[k] for k in base.nodes)))
    for chain, name in zip(chains, names, strict=False):
        graph[chain.load_image]["inputs"]["image"] = name


def _set_input(graph: dict, key: str, value: Any) -> int:
    count = 0
    for class_type, name in TARGETS[key]:
        for node_id in _nodes_of(graph, class_type):
            inputs = graph[node_id]["inputs"]
            current = inputs.get(name)
            if _is_link(current):
                raise QueueError(
                    f"{key}: input {name} of {_node_label(graph, node_id)} is wired from node "
                    f"{current[0]}, so the queue cannot set it: make it a plain value (a "
                    "widget) in the workflow"
                )
            inputs[name] = value
            count += 1
    return count


def _set_negative(graph: dict, text: str) -> int:
    count = 0
    for class_type in SAMPLERS:
        for node_id in _nodes_of(graph, class_type):
            link = graph[node_id]["inputs"].get("negative")
            if not _is_link(link):
                continue
            source = graph.get(str(link[0])) or {}
            if source.get("class_type") != "CLIPTextEncode":
                raise QueueError(
                    f"negative: the negative of {_node_label(graph, node_id)} is not a CLIP Text "
                    "Encode node, so the queue cannot set its text"
                )
            source["inputs"]["text"] = text
            count += 1
    return count


SETTING_KEYS = (
    "prompt",
    "references",
    "negative",
    "seed",
    "steps",
    "cfg",
    "scene_end",
    "fusion_end",
    "width",
    "height",
    "batch_size",
)


def apply_settings(graph: Mapping[str, Any], settings: Mapping[str, Any]) -> dict:
    """A copy of ``graph`` with the settings applied to the nodes that mean them.

    ``settings`` keys: ``prompt``, ``references`` (image names on the server, in marker
    order), ``negative``, ``seed``, ``steps``, ``cfg``, ``scene_end``, ``fusion_end``,
    ``width``, ``height``, ``batch_size``; None values are left as in the graph.
    """
    graph = copy.deepcopy(dict(graph))
    for key, value in settings.items():
        if value is None:
            continue
        if key == "references":
            _set_people(graph, list(value))
            continue
        if key == "negative":
            found = _set_negative(graph, value)
        elif key in TARGETS:
            found = _set_input(graph, key, value)
        else:
            raise QueueError(f"unknown setting {key!r}: known are {', '.join(SETTING_KEYS)}")
        if not found:
            where = ", ".join(f"{c}.{n}" for c, n in TARGETS.get(key, (("CLIPTextEncode", ""),)))
            raise QueueError(
                f"{key} was given but the workflow has no node that takes it ({where}): "
                "leave it out or use a workflow that has such a node"
            )
    return graph


def graph_settings(graph: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a graph will run with (first node of each kind), for the manifest."""
    out: dict[str, Any] = {}
    for key, pairs in TARGETS.items():
        for class_type, name in pairs:
            ids = _nodes_of(graph, class_type)
            if ids and not _is_link(graph[ids[0]]["inputs"].get(name)):
                out[key] = graph[ids[0]]["inputs"].get(name)
                break
    try:
        chains = person_chains(graph)
    except QueueError:
        chains = []
    out["references"] = [graph[c.load_image]["inputs"].get("image") for c in chains]
    return out


def check_graph(graph: Mapping[str, Any]) -> None:
    """Refuse what would only fail on the server: marker count, stage boundaries."""
    from .subject import parse_prompt, require_subjects  # torch: imported only when needed

    people = len(person_chains(graph))
    for node_id in _nodes_of(graph, "FaceDiffuserSubjectEncode"):
        prompt = graph[node_id]["inputs"].get("prompt")
        if isinstance(prompt, str):
            try:
                require_subjects(parse_prompt(prompt), people)
            except FaceDiffuserError as exc:
                raise QueueError(f"{_node_label(graph, node_id)}: {exc}") from None
    for class_type in SAMPLERS:
        for node_id in _nodes_of(graph, class_type):
            inputs = graph[node_id]["inputs"]
            scene, fusion = inputs.get("scene_end"), inputs.get("fusion_end")
            if isinstance(scene, (int, float)) and isinstance(fusion, (int, float)):
                if not 0 <= scene <= fusion <= 1:
                    raise QueueError(
                        f"{_node_label(graph, node_id)}: scene_end {scene} and fusion_end "
                        f"{fusion} must satisfy 0 <= scene_end <= fusion_end <= 1 (paper: "
                        "0.32 and 0.62)"
                    )


# ------------------------------------------------------------------ readable server errors


def describe_rejection(body: Mapping[str, Any], graph: Mapping[str, Any]) -> str:
    """One readable text for a 400 from ``POST /prompt`` (node titles, not just ids)."""
    lines = []
    error = body.get("error")
    node_errors = body.get("node_errors") or {}
    if isinstance(error, dict):
        message = str(error.get("message") or "prompt rejected").rstrip(".")
        details = str(error.get("details") or "")
        if error.get("type") == "missing_node_type":
            lines.append(
                f"{message}: install the custom node pack that provides it on the server and "
                "restart ComfyUI"
            )
        elif "does not exist" in message:
            found = re.search(r"#(\w+)", details)
            where = f" (node {found.group(1)} '{_title(graph, found.group(1))}')" if found else ""
            lines.append(
                f"{message}{where}: install the custom node pack that provides it on the server "
                "and restart ComfyUI"
            )
        elif not node_errors or details:
            lines.append(f"{message}: {details}" if details else message)
    elif error:
        lines.append(str(error))
    for node_id, entry in node_errors.items():
        label = f"node {node_id} '{_title(graph, node_id, entry.get('class_type'))}'"
        for err in entry.get("errors") or []:
            text = str(err.get("message") or err.get("type") or "error")
            if err.get("details"):
                text += f": {err['details']}"
            name = (err.get("extra_info") or {}).get("input_name", "")
            if err.get("type") == "value_not_in_list" and name in MODEL_INPUTS:
                text += f" ({_missing_hint(str(entry.get('class_type', '')), name)})"
            lines.append(f"{label}: {text}")
    return "; ".join(lines) or "ComfyUI rejected the prompt (HTTP 400) without saying why"


def describe_execution_error(entry: Mapping[str, Any], graph: Mapping[str, Any]) -> str:
    """The execution error in a ``/history`` entry, with the failing node's title."""
    messages = (entry.get("status") or {}).get("messages") or []
    for kind, data in messages:
        if kind == "execution_error" and isinstance(data, dict):
            node_id = str(data.get("node_id"))
            exc_type = str(data.get("exception_type") or "error").rsplit(".", 1)[-1]
            text = str(data.get("exception_message") or "").strip()
            return (
                f"node {node_id} '{_title(graph, node_id, data.get('node_type'))}' "
                f"({data.get('node_type')}) failed: {exc_type}: {text}"
            )
    for kind, data in messages:
        if kind == "execution_interrupted":
            node = (data or {}).get("node_id")
            return f"interrupted on the server (Cancel or /interrupt) at node {node}"
    return "ComfyUI reports an error without details (see its console log)"


# =========================================================================== batch files

INT_KEYS = ("seed", "steps", "width", "height", "batch_size")
FLOAT_KEYS = ("cfg", "scene_end", "fusion_end")
ALIASES = {
    "batch": "batch_size",
    "refs": "references",
    "reference": "references",
    "images": "references",
    "negative_prompt": "negative",
    "key": "id",
}
COLUMNS = ("id", *SETTING_KEYS, *(f"person_{i}" for i in range(1, MAX_PEOPLE + 1)))


@dataclass
class BatchItem:
    """One prompt to queue: its settings (None = as in the workflow), or why it is invalid."""

    key: str
    row: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def references(self) -> list[Path]:
        return [Path(p) for p in self.settings.get("references") or []]


def _column(name: str) -> str:
    name = name.strip().lower().replace("-", "_").replace(" ", "_")
    return ALIASES.get(name, name)


def _convert(key: str, value: Any, base: Path) -> Any:
    """A raw cell -> a typed setting; ValueError with the reason."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if key in INT_KEYS:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        try:
            number = int(value) if not isinstance(value, str) else int(value.strip())
        except ValueError:
            raise ValueError(f"{key} must be a whole number, got {value!r}") from None
        if key == "seed" and not 0 <= number < 2**64:
            raise ValueError(f"seed must be between 0 and 2^64-1, got {number}")
        if key == "steps" and not 1 <= number <= 10000:
            raise ValueError(f"steps must be 1 to 10000, got {number}")
        if key in ("width", "height") and (number < 16 or number > 16384 or number % 8):
            raise ValueError(f"{key} must be a multiple of 8 from 16 to 16384, got {number}")
        if key == "batch_size" and not 1 <= number <= 4096:
            raise ValueError(f"batch must be 1 to 4096, got {number}")
        return number
    if key in FLOAT_KEYS:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None
        if key == "cfg" and not 0 <= number <= 100:
            raise ValueError(f"cfg must be 0 to 100, got {number}")
        if key != "cfg" and not 0 <= number <= 1:
            raise ValueError(f"{key} is a fraction of the steps, 0 to 1, got {number}")
        return number
    if key == "references":
        if isinstance(value, str):
            value = [v for v in re.split(r"[;|]", value) if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("references must be image paths (a list, or ';'-separated)")
        paths = []
        for v in value:
            path = Path(v.strip()).expanduser()
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise ValueError(f"reference image {v.strip()!r} not found (looked at {path})")
            paths.append(str(path))
        if len(paths) > MAX_PEOPLE:
            raise ValueError(f"{len(paths)} references; Face-diffuser takes at most {MAX_PEOPLE}")
        return paths
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text, got {value!r}")
    return value


def make_item(
    key: str, row: int, raw: Mapping[str, Any], defaults: Mapping[str, Any], base: Path
) -> BatchItem:
    """A batch item from one row (already mapped to column names) over ``defaults``."""
    item = BatchItem(key=key, row=row, settings=dict(defaults))
    people = {k: raw[k] for k in raw if k.startswith("person_") and raw[k] not in (None, "")}
    raw = {k: v for k, v in raw.items() if not k.startswith("person_") and k != "id"}
    if people:
        if raw.get("references") not in (None, ""):
            item.error = "give references or person_1..person_4 columns, not both"
            return item
        order = sorted(people, key=lambda k: int(k.rsplit("_", 1)[1]))
        if order != [f"person_{i}" for i in range(1, len(order) + 1)]:
            item.error = "person_1..person_4 must be filled from person_1 on, without gaps"
            return item
        raw["references"] = [str(people[k]) for k in order]
    try:
        for k, v in raw.items():
            converted = _convert(k, v, base)
            if converted is not None:
                item.settings[k] = converted
        prompt = item.settings.get("prompt")
        refs = item.settings.get("references")
        if prompt is not None:
            from .subject import parse_prompt, require_subjects

            parsed = parse_prompt(prompt)
            if refs is not None:
                require_subjects(parsed, len(refs))
            elif parsed.num_subjects == 0:
                require_subjects(parsed, 0)
        scene, fusion = item.settings.get("scene_end"), item.settings.get("fusion_end")
        if scene is not None and fusion is not None and scene > fusion:
            raise ValueError(f"scene_end {scene} is after fusion_end {fusion}")
    except (ValueError, FaceDiffuserError) as exc:
        item.error = str(exc)
    return item


def read_batch(
    path: str | os.PathLike, defaults: Mapping[str, Any] | None = None
) -> list[BatchItem]:
    """Items from a CSV (header row) or JSONL (one object per line) batch file.

    Columns: ``id`` (optional; default: the row number), ``prompt``, ``references`` (paths,
    ';'-separated in CSV, a list in JSONL; relative to the batch file) or ``person_1`` ...
    ``person_4``, ``negative``, ``seed``, ``steps``, ``cfg``, ``scene_end``, ``fusion_end``,
    ``width``, ``height``, ``batch``. Empty cells keep ``defaults`` (the command line) or the
    workflow's value. A bad row becomes an item with ``error`` set; an unknown column or an
    unreadable file is a QueueError.
    """
    path = Path(path)
    defaults = dict(defaults or {})
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise QueueError(f"batch file {path} cannot be read ({exc.strerror or exc})") from None
    base = path.resolve().parent
    rows: list[tuple[int, dict | None, str | None]] = []
    is_jsonl = path.suffix.lower() in (".jsonl", ".ndjson") or (
        path.suffix.lower() != ".csv" and text.lstrip().startswith("{")
    )
    if is_jsonl:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                rows.append((number, None, f"line {number} is not JSON: {exc}"))
                continue
            if not isinstance(obj, dict):
                rows.append((number, None, f"line {number} is not a JSON object"))
                continue
            rows.append((number, obj, None))
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise QueueError(f"batch file {path} is empty: write a header row, e.g. id,prompt,seed")
        for record in reader:
            number = reader.line_num
            if None in record:
                rows.append((number, None, f"line {number} has more cells than the header"))
                continue
            if not any((v or "").strip() for v in record.values()):
                continue
            rows.append((number, record, None))
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for index, (number, record, problem) in enumerate(rows, 1):
        mapped = {_column(k): v for k, v in (record or {}).items()}
        unknown = sorted(k for k in mapped if k not in COLUMNS)
        if unknown:
            raise QueueError(
                f"batch file {path} line {number}: unknown column(s) {', '.join(unknown)}: "
                f"known are {', '.join(COLUMNS)} (and 'batch' for batch_size)"
            )
        key = str(mapped.get("id") or "").strip() or f"{index:04d}"
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", key) or key.startswith("."):
            item = BatchItem(key=f"{index:04d}", row=number)
            item.error = f"id {key!r} may only use letters, digits, '.', '_' and '-'"
        elif key in seen:
            item = BatchItem(key=f"{index:04d}", row=number)
            item.error = f"id {key!r} repeats line {seen[key]}: ids must be unique"
        elif problem:
            item = BatchItem(key=key, row=number, error=problem)
        else:
            item = make_item(key, number, mapped, defaults, base)
        seen.setdefault(item.key, number)
        if item.error and not item.error.startswith("line "):
            item.error = f"line {number}: {item.error}"
        items.append(item)
    if not items:
        raise QueueError(f"batch file {path} has no rows: add one line per prompt")
    return items


# =========================================================================== manifest


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Manifest:
    """``OUT/manifest.json``: one record per item, rewritten atomically on every change."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / MANIFEST
        self.lock = threading.RLock()
        self.data: dict[str, Any] = {"format": MANIFEST_FORMAT, "items": {}, "runs": []}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise QueueError(
                    f"{self.path} is not readable ({exc}): move it away to start the batch "
                    "afresh, or use another --out folder"
                ) from None
            if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
                raise QueueError(
                    f"{self.path} is not a facediffuser queue manifest: use another --out folder"
                )
            data.setdefault("items", {})
            data.setdefault("runs", [])
            self.data = data

    @property
    def items(self) -> dict[str, dict]:
        return self.data["items"]

    def update(self, key: str, **fields: Any) -> dict:
        """Change one item's record and write the manifest."""
        with self.lock:
            record = self.stage(key, **fields)
            self.save()
            return record

    def stage(self, key: str, **fields: Any) -> dict:
        """Change one item's record in memory only (:meth:`save` writes it)."""
        with self.lock:
            record = self.items.setdefault(key, {})
            record.update(fields)
            return record

    def save(self) -> None:
        with self.lock:
            self.data["updated"] = _now()
            text = json.dumps(self.data, indent=1, default=str) + "\n"
            atomic_write(self.path, text.encode())


# =========================================================================== the queue


@dataclass
class QueueOptions:
    """How a batch is run; every wait has a bound."""

    servers: Sequence[str] = (DEFAULT_SERVER,)
    out: Path = Path("queue-out")
    depth: int = 1  # our prompts on one server at a time (2 keeps a GPU busy between items)
    poll: float = 1.0  # seconds between /history polls of a running prompt
    timeout: float = 3600.0  # per item, from submission to its result
    request_timeout: float = 30.0  # one HTTP request
    retries: int = 5  # consecutive connection failures before a server is given up
    backoff: float = 1.0  # first retry delay, doubled per failure
    backoff_max: float = 30.0
    max_attempts: int = 3  # submissions of one item (a server restart loses queued prompts)
    interrupt: bool = False  # on Ctrl-C, also cancel our running/queued prompts
    websocket: bool = True
    progress: bool = True


@dataclass
class QueueResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # not finished (interrupted run)
    interrupted: bool = False
    seconds: float = 0.0
    servers: dict[str, dict] = field(default_factory=dict)
    manifest: Path | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if (self.failed or self.invalid or self.pending) else 0


@dataclass
class Workflow:
    name: str
    graph: dict  # API format
    digest: str


@dataclass
class _Job:
    item: BatchItem
    workflow: Workflow
    digest: str
    prompt_id: str | None = None
    graph: dict | None = None
    state: str = "new"  # new | submitted | unknown (POST outcome unknown) | recover
    submitted: float = 0.0
    submit_s: float = 0.0
    attempts: int = 0
    server_outputs: list[dict] | None = None  # finished on the server, still to download
    last_queue_check: float = 0.0

    @property
    def key(self) -> str:
        return self.item.key


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_name(path: Path, sha: str) -> str:
    """Content-addressed name on the server: the same photo is uploaded once, never clashes."""
    suffix = (
        Path(path).suffix.lower()
        if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp")
        else ".png"
    )
    return f"fdq_{sha[:20]}{suffix}"


class _Server(threading.Thread):
    """Everything about one ComfyUI server: its jobs, uploads, retries, progress."""

    def __init__(self, runner: QueueRunner, url: str, index: int):
        super().__init__(daemon=True, name=f"fdq-{url}")
        self.runner = runner
        self.url = url
        self.index = index
        self.client = ComfyClient(url, timeout=runner.options.request_timeout)
        self.inbox: deque[_Job] = deque()
        self.inflight: dict[str, _Job] = {}
        self.current: _Job | None = None  # taken from the inbox, not yet in flight
        self.wake = threading.Event()
        self.alive = True
        self.failures = 0
        self.reason = ""
        self.uploaded: dict[str, str] = {}
        self.cannot_run: dict[str, str] = {}
        self.checked: set[str] = set()
        self.progress: dict[str, tuple[int, int]] = {}
        self.listener: _Listener | None = None
        self.stats = {"done": 0, "failed": 0, "submitted": 0, "execution_s": 0.0}

    # -------------------------------------------------------------- bookkeeping

    @property
    def ours(self) -> int:
        return len(self.inbox) + len(self.inflight) + (self.current is not None)

    def log(self, text: str) -> None:
        self.runner.log(text)

    def on_event(self, kind: str, data: dict) -> None:
        if kind == "reconnected":
            for job in list(self.inflight.values()):
                job.state = "unknown" if job.state == "submitted" else job.state
            self.wake.set()
            return
        prompt_id = str(data.get("prompt_id") or "")
        if prompt_id not in self.inflight:
            return
        if kind == "progress":
            try:
                self.progress[prompt_id] = (int(data["value"]), int(data["max"]))
            except (KeyError, TypeError, ValueError):
                pass
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            self.wake.set()
        elif kind == "executing" and data.get("node") is None:
            self.wake.set()

    def _failed_contact(self, exc: ServerUnreachable) -> None:
        self.failures += 1
        self.reason = exc.reason
        if self.failures > self.runner.options.retries:
            self._give_up()
            return
        delay = min(
            self.runner.options.backoff_max,
            self.runner.options.backoff * 2 ** (self.failures - 1),
        )
        self.log(
            f"server {self.url}: {exc.reason}; retry {self.failures} of "
            f"{self.runner.options.retries} in {delay:.1f} s"
        )
        for job in self.inflight.values():
            job.state = "unknown" if job.state == "submitted" else job.state
        self.runner.stopping.wait(delay)

    def _contact_ok(self) -> None:
        if self.failures:
            self.log(f"server {self.url}: reachable again")
        self.failures = 0

    def _give_up(self) -> None:
        with self.runner.lock:  # the dispatcher adds to inboxes of live servers only
            self.alive = False
        self.log(
            f"server {self.url}: giving up after {self.runner.options.retries} retries "
            f"({self.reason}); its items go to the other servers"
        )
        with self.runner.lock:
            jobs = list(self.inbox) + list(self.inflight.values())
            self.inbox.clear()
            self.inflight.clear()
        for job in jobs:
            if job.server_outputs is not None:
                self.runner.finish_failed(
                    job,
                    self,
                    f"finished on {self.url}, but its images could not be downloaded "
                    f"({self.reason}): they are in that server's output folder: "
                    + ", ".join(o.get("filename", "?") for o in job.server_outputs),
                )
            else:
                self.runner.release(job, f"{self.url} unreachable")

    # -------------------------------------------------------------- the loop

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a bug must not hang the batch: hand the items on
            self.reason = f"internal error {type(exc).__name__}: {exc}"
            self._give_up()

    def _loop(self) -> None:
        options = self.runner.options
        while self.alive and not self.runner.stopping.is_set():
            with self.runner.lock:
                job = self.current = self.inbox.popleft() if self.inbox else None
            try:
                if job is not None:
                    self._start(job)
                self.current = None
                self._poll()
                self._contact_ok()
            except ServerUnreachable as exc:
                self.current = None
                self._failed_contact(exc)
            if self.runner.all_finished.is_set():
                return
            if not self.inbox:
                self.wake.wait(options.poll)
                self.wake.clear()

    def _check_workflow(self, workflow: Workflow) -> None:
        if workflow.name in self.checked:
            return
        info = fetch_object_info(self.client, [n["class_type"] for n in workflow.graph.values()])
        problems = server_problems(workflow.graph, info)
        if problems:
            self.cannot_run[workflow.name] = "; ".join(problems)
            self.log(
                f"server {self.url} cannot run {workflow.name}: {self.cannot_run[workflow.name]}"
            )
        self.checked.add(workflow.name)

    def _start(self, job: _Job) -> None:
        if job.state == "recover":
            with self.runner.lock:
                self.inflight[job.prompt_id] = job
            return
        try:
            self._check_workflow(job.workflow)
        except ServerUnreachable:
            with self.runner.lock:
                self.inbox.appendleft(job)
            raise
        if job.workflow.name in self.cannot_run:
            self.runner.reroute(job, self)
            return
        t0 = time.monotonic()
        names = []
        try:
            for ref in job.item.references:
                sha = self.runner.sha(ref)
                if sha not in self.uploaded:
                    self.uploaded[sha] = self.client.upload_image(ref, upload_name(ref, sha))
                names.append(self.uploaded[sha])
        except ServerUnreachable:
            with self.runner.lock:
                self.inbox.appendleft(job)
            raise
        settings = dict(job.item.settings)
        if names:
            settings["references"] = names
        try:
            graph = apply_settings(job.workflow.graph, settings)
        except QueueError as exc:  # was checked when planning; only a race could get here
            self.runner.finish_failed(job, self, str(exc))
            return
        job.graph = graph
        job.prompt_id = str(uuid.uuid4())
        job.attempts += 1
        job.state = "submitted"
        job.submitted = time.monotonic()
        self.runner.manifest.update(
            job.key,
            status="submitted",
            prompt_id=job.prompt_id,
            server=self.url,
            attempts=job.attempts,
            seed=graph_settings(graph).get("seed"),
            submitted_at=_now(),
            error=None,
        )
        with self.runner.lock:
            self.inflight[job.prompt_id] = job
        try:
            self.client.submit(graph, client_id=self.runner.client_id, prompt_id=job.prompt_id)
        except PromptRejected as exc:
            with self.runner.lock:
                self.inflight.pop(job.prompt_id, None)
            if is_server_problem(exc.body):
                self.cannot_run[job.workflow.name] = str(exc)
                self.log(f"server {self.url} cannot run {job.workflow.name}: {exc}")
                self.runner.manifest.update(job.key, status="pending", prompt_id=None)
                job.attempts -= 1
                self.runner.reroute(job, self)
            else:
                self.runner.finish_failed(job, self, f"rejected by ComfyUI: {exc}")
            return
        except ServerUnreachable:
            job.state = "unknown"  # it may have arrived: /queue and /history will tell
            raise
        job.submit_s = time.monotonic() - t0
        self.stats["submitted"] += 1

    def _poll(self) -> None:
        now = time.monotonic()
        for prompt_id, job in list(self.inflight.items()):
            if self.runner.stopping.is_set():
                return
            if job.server_outputs is not None:
                self._download(job)
                continue
            entry = self.client.history(prompt_id)
            stale = now - job.last_queue_check > QUEUE_CHECK_S
            if entry is None and (job.state != "submitted" or stale):
                # not finished: still queued, or lost (restart, or a POST that never arrived)?
                job.last_queue_check = now
                if prompt_id in self.client.queued_ids():
                    job.state = "submitted"
                else:
                    entry = self.client.history(prompt_id)  # it may have finished meanwhile
                    if entry is None:
                        self._lost(job)
                        continue
            if entry is None:
                if now - job.submitted > self.runner.options.timeout and job.state == "submitted":
                    self._cancel([prompt_id])
                    with self.runner.lock:
                        self.inflight.pop(prompt_id, None)
                    self.runner.finish_failed(
                        job,
                        self,
                        f"no result within {self.runner.options.timeout:.0f} s (--timeout); "
                        "it was cancelled on the server",
                    )
                continue
            self._finished(job, entry)

    def _cancel(self, prompt_ids: Sequence[str]) -> None:
        try:
            self.client.delete_queued(prompt_ids)
            for prompt_id in prompt_ids:
                self.client.interrupt(prompt_id)
        except ServerUnreachable:
            pass

    def _lost(self, job: _Job) -> None:
        self.uploaded.clear()  # a restarted (or replaced) server may lack our uploads
        with self.runner.lock:
            self.inflight.pop(job.prompt_id, None)
        if job.attempts >= self.runner.options.max_attempts:
            self.runner.finish_failed(
                job,
                self,
                f"the server lost the prompt {job.attempts} times (restarts?); giving up on it",
            )
        else:
            self.runner.release(job, f"not queued on {self.url} (server restarted?)")

    def _finished(self, job: _Job, entry: dict) -> None:
        status = entry.get("status") or {}
        if status.get("status_str") == "success" or (
            status.get("completed") and status.get("status_str") is None
        ):
            files, texts = [], {}
            for node_id, out in (entry.get("outputs") or {}).items():
                for kind, values in (out or {}).items():
                    if not isinstance(values, list):
                        continue
                    for value in values:
                        if isinstance(value, dict) and "filename" in value:
                            if value.get("type", "output") == "output":
                                files.append(value)
                        elif kind == "text":
                            texts.setdefault(node_id, []).append(value)
            job.server_outputs = files
            execution_s = _execution_seconds(status.get("messages") or [])
            self.runner.manifest.update(
                job.key,
                server_status="success",
                server_outputs=files,
                texts=texts,
                execution_s=execution_s,
            )
            if execution_s is not None:
                self.stats["execution_s"] += execution_s
            self._download(job)
        else:
            with self.runner.lock:
                self.inflight.pop(job.prompt_id, None)
            self.runner.finish_failed(job, self, describe_execution_error(entry, job.graph or {}))

    def _download(self, job: _Job) -> None:
        t0 = time.monotonic()
        folder = self.runner.options.out / job.key
        paths = []
        for value in job.server_outputs or []:
            name = Path(str(value["filename"])).name
            data = self.client.view(value["filename"], value.get("subfolder", ""), "output")
            atomic_write(folder / name, data)
            paths.append(f"{job.key}/{name}")
        with self.runner.lock:
            self.inflight.pop(job.prompt_id, None)
        self.runner.finish_done(job, self, paths, time.monotonic() - t0)


def _execution_seconds(messages: Sequence[Any]) -> float | None:
    stamps = {
        m[0]: m[1].get("timestamp")
        for m in messages
        if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)
    }
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return round((end - start) / 1000.0, 3)
    return None


class QueueRunner:
    """Runs planned jobs on the servers; see :func:`run_queue`."""

    def __init__(self, options: QueueOptions, log: Callable[[str], None] | None = None):
        self.options = options
        self.options.out = Path(options.out)
        self.manifest = Manifest(self.options.out)
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.all_finished = threading.Event()
        self.client_id = "facediffuser-queue-" + uuid.uuid4().hex[:12]
        self.pending: deque[_Job] = deque()
        self.open_jobs = 0
        self.result = QueueResult(manifest=self.manifest.path)
        self._log = log
        self._bar: Any = None
        self._sha_cache: dict[str, str] = {}
        urls = [normalize_url(u) for u in options.servers] or [DEFAULT_SERVER]
        urls = list(dict.fromkeys(urls))
        self.servers = [_Server(self, url, i) for i, url in enumerate(urls)]

    # -------------------------------------------------------------- output

    def log(self, text: str, *, stream: Any = None) -> None:
        if self._log is not None:
            self._log(text)
            return
        stream = stream or sys.stderr
        if self._bar is not None:
            self._bar.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

    def say(self, text: str) -> None:
        self.log(text, stream=sys.stdout)

    def sha(self, path: Path) -> str:
        key = str(path)
        if key not in self._sha_cache:
            self._sha_cache[key] = _sha(Path(path))
        return self._sha_cache[key]

    # -------------------------------------------------------------- job outcomes

    def _close(self) -> None:
        self.open_jobs -= 1
        if self.open_jobs <= 0:
            self.all_finished.set()
        if self._bar is not None:
            self._bar.update(1)

    def finish_done(self, job: _Job, server: _Server, paths: list[str], download_s: float) -> None:
        with self.lock:
            if job.key in self.result.done:  # never twice
                return
            wait_s = time.monotonic() - job.submitted if job.submitted else None
            record = self.manifest.update(
                job.key,
                status="done",
                outputs=paths,
                finished_at=_now(),
                timings={
                    "submit_s": round(job.submit_s, 3),
                    "wait_s": round(wait_s, 3) if wait_s is not None else None,
                    "execution_s": self.manifest.items.get(job.key, {}).get("execution_s"),
                    "download_s": round(download_s, 3),
                },
            )
            server.stats["done"] += 1
            self.result.done.append(job.key)
            self._close()
        seconds = record["timings"]["wait_s"]
        shown = f"{seconds:5.1f} s" if seconds is not None else "      "
        first = paths[0] if paths else "(no images)"
        more = f" (+{len(paths) - 1})" if len(paths) > 1 else ""
        self.say(
            f"done    {job.key}  {_host(server.url)}  seed {record.get('seed')}  {shown}  "
            f"{self.options.out / first if paths else first}{more}"
        )

    def finish_failed(self, job: _Job, server: _Server | None, message: str) -> None:
        with self.lock:
            if job.key in self.result.done or job.key in self.result.failed:
                return
            self.manifest.update(
                job.key,
                status="failed",
                error=message,
                finished_at=_now(),
                server=server.url if server else None,
            )
            if server is not None:
                server.stats["failed"] += 1
            self.result.failed.append(job.key)
            self._close()
        where = _host(server.url) if server else "-"
        self.say(f"failed  {job.key}  {where}  {message}")

    def release(self, job: _Job, reason: str) -> None:
        """Back to the pending queue (never after a success: see finish_done)."""
        with self.lock:
            if job.key in self.result.done:
                return
            job.state = "new"
            job.prompt_id = None
            self.manifest.update(job.key, status="pending", note=reason)
            self.pending.appendleft(job)

    def reroute(self, job: _Job, server: _Server) -> None:
        with self.lock:
            able = [s for s in self.servers if s.alive and job.workflow.name not in s.cannot_run]
        if able:
            self.release(job, f"{server.url} cannot run {job.workflow.name}")
        else:
            self.finish_failed(
                job,
                server,
                f"no server can run {job.workflow.name}: {server.cannot_run[job.workflow.name]}",
            )

    # -------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        """Hand pending jobs to the least busy servers that have room for one more."""
        while True:
            with self.lock:
                if not self.pending:
                    return
                job = self.pending[0]
                name = job.workflow.name
                room = [
                    s
                    for s in self.servers
                    if s.alive and name not in s.cannot_run and s.ours < self.options.depth
                ]
                if not room:
                    if not any(s.alive and name not in s.cannot_run for s in self.servers):
                        self.pending.popleft()
                        why = "; ".join(
                            f"{s.url}: {s.cannot_run.get(name) or s.reason or 'unreachable'}"
                            for s in self.servers
                        )
                        self.finish_failed(job, None, f"no server left to run it ({why})")
                        continue
                    return
            loads = {}
            for server in room:
                try:
                    loads[server] = server.client.queue_remaining(
                        timeout=min(5.0, self.options.request_timeout)
                    )
                except ServerUnreachable:
                    loads[server] = 10**6 + server.ours  # still a candidate: it retries itself
            best = min(room, key=lambda s: (loads[s], s.ours, s.stats["submitted"], s.index))
            with self.lock:
                if not self.pending or self.pending[0] is not job or not best.alive:
                    continue
                self.pending.popleft()
                best.inbox.append(job)
            best.wake.set()

    # -------------------------------------------------------------- run

    def run(self, jobs: Sequence[_Job], recovering: Mapping[str, Sequence[_Job]]) -> QueueResult:
        options = self.options
        t0 = time.monotonic()
        alive = [s for s in self.servers if s.alive]
        if not alive:
            raise QueueError(
                "no ComfyUI server is reachable: "
                + "; ".join(f"{s.url} ({s.reason})" for s in self.servers)
                + ": start ComfyUI there (python main.py --listen <address> --port <port>) "
                "or pass the right --server"
            )
        for server in self.servers:
            for job in recovering.get(server.url, ()):
                if server.alive:
                    server.inbox.append(job)
                else:
                    job.state = "new"
                    self.pending.append(job)
        self.pending.extend(jobs)
        self.open_jobs = len(self.pending) + sum(s.ours for s in self.servers)
        if self.open_jobs == 0:
            self.all_finished.set()
        run_record = {"started": _now(), "servers": [s.url for s in self.servers]}
        bar_total = self.open_jobs
        if options.progress and bar_total:
            from tqdm import tqdm

            self._bar = tqdm(total=bar_total, unit="item", dynamic_ncols=True, file=sys.stderr)
        listener_stop = threading.Event()
        for server in alive:
            if options.websocket:
                server.listener = _Listener(
                    server.url,
                    self.client_id,
                    server.on_event,
                    listener_stop,
                    backoff_max=options.backoff_max,
                )
                server.listener.start()
            server.start()
        try:
            while not self.all_finished.is_set():
                self._dispatch()
                if not any(s.alive and s.is_alive() for s in self.servers):
                    with self.lock:
                        stranded = list(self.pending)
                        self.pending.clear()
                    why = "; ".join(f"{s.url}: {s.reason or 'stopped'}" for s in self.servers)
                    for job in stranded:
                        self.finish_failed(job, None, f"no server left to run it ({why})")
                    break
                self._show_progress()
                self.all_finished.wait(0.1)
        except KeyboardInterrupt:
            self.result.interrupted = True
            self.log("interrupted: stopping (the manifest keeps what finished)")
        finally:
            self.stopping.set()
            listener_stop.set()
            for server in self.servers:
                server.wake.set()
            for server in self.servers:
                if server.is_alive():
                    server.join(timeout=options.request_timeout * 2 + 5)
            self._stop_leftovers()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.result.seconds = time.monotonic() - t0
            self.result.servers = self._server_report()
            run_record.update(
                finished=_now(),
                seconds=round(self.result.seconds, 3),
                interrupted=self.result.interrupted,
                server_stats=self.result.servers,
            )
            with self.manifest.lock:
                self.manifest.data["runs"].append(run_record)
                self.manifest.data["servers"] = self.result.servers
                self.manifest.save()
        return self.result

    def _stop_leftovers(self) -> None:
        """After a stop: record what is still queued, optionally cancel it on the servers."""
        for server in self.servers:
            with self.lock:
                waiting = list(self.pending) + list(server.inbox)
                running = list(server.inflight.values())
                self.pending.clear()
                server.inbox.clear()
            for job in waiting:
                if job.key not in self.result.pending:
                    self.result.pending.append(job.key)
                if job.state != "recover":
                    self.manifest.update(job.key, status="pending")
            if running and self.options.interrupt and server.alive:
                server._cancel([j.prompt_id for j in running if j.prompt_id])
                for job in running:
                    self.manifest.update(job.key, status="interrupted")
            for job in running:
                self.result.pending.append(job.key)

    def _server_report(self) -> dict[str, dict]:
        minutes = max(self.result.seconds, 1e-6) / 60.0
        report = {}
        for server in self.servers:
            stats = dict(server.stats)
            stats["execution_s"] = round(stats["execution_s"], 3)
            stats["items_per_min"] = round(stats["done"] / minutes, 2)
            stats["websocket"] = bool(server.listener and server.listener.ever_connected)
            if not server.alive:
                stats["unreachable"] = server.reason
            report[server.url] = stats
        return report

    def _show_progress(self) -> None:
        if self._bar is None:
            return
        parts = []
        for server in self.servers:
            if not server.alive:
                parts.append(f"{_host(server.url)} down")
                continue
            steps = [server.progress.get(pid) for pid in list(server.inflight)]
            steps = [s for s in steps if s]
            if steps:
                parts.append(f"{_host(server.url)} {steps[0][0]}/{steps[0][1]}")
            else:
                parts.append(f"{_host(server.url)} {'busy' if server.ours else 'idle'}")
        self._bar.set_postfix_str(" | ".join(parts), refresh=True)


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


# =========================================================================== planning


def shipped_workflow(people: int) -> Path:
    name = ONE_PERSON if people <= 1 else TWO_PEOPLE
    path = WORKFLOW_DIR / name
    if not path.is_file():
        raise QueueError(
            f"the shipped workflow {name} is not installed next to the package ({WORKFLOW_DIR}): "
            "give a workflow file (an API export of your graph) as the first argument"
        )
    return path


def _graph_digest(graph: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:16]


class _Planner:
    """Items -> jobs: pick and convert the workflow, validate each item's graph."""

    def __init__(self, workflow: str | os.PathLike | None, servers: Sequence[_Server]):
        self.explicit = Path(workflow) if workflow else None
        self.servers = servers
        self.cache: dict[str, Workflow] = {}

    def _object_info(self, ui: Mapping[str, Any]) -> dict:
        classes = [n.get("type") for n in ui.get("nodes") or [] if n.get("type")]
        classes = [c for c in classes if c not in VIRTUAL_NODES]
        errors = []
        for server in self.servers:
            if not server.alive:
                continue
            try:
                return fetch_object_info(server.client, classes)
            except ServerUnreachable as exc:
                errors.append(str(exc))
        raise QueueError(
            "a UI workflow needs a server's /object_info to be converted, and none answered: "
            + "; ".join(errors)
        )

    def workflow_for(self, item: BatchItem) -> Workflow:
        if self.explicit is not None:
            path = self.explicit
        else:
            refs = item.settings.get("references")
            prompt = item.settings.get("prompt")
            people = len(refs) if refs else (prompt.count(MARKER) if prompt else 2)
            path = shipped_workflow(people)
        key = str(path)
        if key not in self.cache:
            doc = load_workflow(path)
            if is_ui_workflow(doc):
                doc = ui_to_api(doc, self._object_info(doc))
            self.cache[key] = Workflow(name=path.name, graph=doc, digest=_graph_digest(doc))
        return self.cache[key]


def _item_digest(item: BatchItem, workflow: Workflow, shas: Sequence[str]) -> str:
    settings = {k: v for k, v in item.settings.items() if k != "references"}
    payload = {"workflow": workflow.digest, "settings": settings, "references": list(shas)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def run_queue(
    items: Sequence[BatchItem],
    options: QueueOptions,
    *,
    workflow: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> QueueResult:
    """Queue ``items`` on ``options.servers``; results and manifest under ``options.out``.

    Resumes from an existing manifest in ``options.out``: items finished with the same
    inputs are skipped, items still queued on a server are collected from it. ``stop`` (set
    from another thread) ends the run like Ctrl-C. Returns a :class:`QueueResult`.
    """
    runner = QueueRunner(options, log=log)
    if stop is not None:
        threading.Thread(target=_watch_stop, args=(stop, runner), daemon=True).start()
    try:
        for server in runner.servers:  # reachability first: conversion may need /object_info
            try:
                server.client.queue_remaining(timeout=min(10.0, options.request_timeout))
            except ServerUnreachable as exc:
                server.alive, server.reason = False, exc.reason
                runner.log(f"server {server.url}: {exc.reason}; not used in this run")
        jobs, recovering = _plan(runner, items, workflow)
        return runner.run(jobs, recovering)
    finally:
        runner.stopping.set()


def _plan(
    runner: QueueRunner, items: Sequence[BatchItem], workflow: str | os.PathLike | None
) -> tuple[list[_Job], dict[str, list[_Job]]]:
    """Validate every item against its graph and sort it: skip, collect, or queue."""
    planner = _Planner(workflow, runner.servers)
    manifest = runner.manifest
    by_url = {s.url: s for s in runner.servers}
    jobs: list[_Job] = []
    recovering: dict[str, list[_Job]] = {}
    seen = set()
    for item in items:
        if item.key in seen:
            item = BatchItem(item.key, item.row, error=f"id {item.key!r} is used twice")
        seen.add(item.key)
        record = manifest.items.get(item.key) or {}
        if item.error:
            manifest.stage(
                item.key, status="invalid", error=item.error, row=item.row, inputs=item.settings
            )
            runner.result.invalid.append(item.key)
            runner.say(f"invalid {item.key}  {item.error}")
            continue
        try:
            wf = planner.workflow_for(item)
            placeholders = [upload_name(p, "0" * 20) for p in item.references]
            settings = dict(item.settings)
            if placeholders:
                settings["references"] = placeholders
            graph = apply_settings(wf.graph, settings)
            check_graph(graph)
            digest = _item_digest(item, wf, [runner.sha(p) for p in item.references])
        except QueueError as exc:
            if not item.row and len(items) == 1:
                raise  # the command line's own item: a user error, exit status 2
            message = f"line {item.row}: {exc}" if item.row else str(exc)
            manifest.stage(
                item.key, status="invalid", error=message, row=item.row, inputs=item.settings
            )
            runner.result.invalid.append(item.key)
            runner.say(f"invalid {item.key}  {message}")
            continue
        job = _Job(item=item, workflow=wf, digest=digest, graph=graph)
        same = record.get("digest") == digest
        if same and record.get("status") == "done":
            runner.result.skipped.append(item.key)
            continue
        if record and not same and record.get("status") in ("done", "submitted"):
            runner.log(f"item {item.key}: its inputs changed since the last run; running it again")
        server = by_url.get(record.get("server") or "")
        if same and record.get("server_status") == "success" and not server:
            message = (
                f"it finished on {record.get('server')} in an earlier run but its images were not "
                "downloaded: run again with that --server to fetch them (it is not queued twice)"
            )
            manifest.stage(item.key, status="failed", error=message)
            runner.result.failed.append(item.key)
            runner.say(f"failed  {item.key}  -  {message}")
            continue
        if (
            same
            and record.get("prompt_id")
            and server
            and (record.get("status") == "submitted" or record.get("server_status") == "success")
        ):
            job.prompt_id, job.state = record["prompt_id"], "recover"
            job.attempts = int(record.get("attempts") or 1)
            job.submitted = time.monotonic()
            if record.get("server_status") == "success":
                job.server_outputs = list(record.get("server_outputs") or [])
            manifest.stage(item.key, status="submitted")
            recovering.setdefault(server.url, []).append(job)
            continue
        manifest.stage(
            item.key,
            status="pending",
            row=item.row,
            inputs=item.settings,
            workflow=wf.name,
            digest=digest,
            prompt_id=None,
            server=None,
            server_status=None,
            server_outputs=None,
            outputs=[],
            error=None,
            attempts=0,
        )
        jobs.append(job)
    manifest.save()
    if runner.result.skipped:
        runner.say(
            f"skipped {len(runner.result.skipped)} item(s) already done (manifest {manifest.path})"
        )
    return jobs, recovering


def _watch_stop(stop: threading.Event, runner: QueueRunner) -> None:
    """End the run like Ctrl-C once ``stop`` is set (returns when the run ends anyway)."""
    while not stop.wait(0.05):
        if runner.stopping.is_set():
            return
    if not runner.stopping.is_set():
        runner.result.interrupted = True
        runner.log("stop requested: stopping (the manifest keeps what finished)")
        runner.all_finished.set()


def summary(result: QueueResult, out: Path) -> str:
    """The lines printed at the end of a run: counts, per-server throughput, manifest."""
    total = sum(
        len(x) for x in (result.done, result.skipped, result.failed, result.invalid, result.pending)
    )
    lines = [
        f"{total} item(s): {len(result.done)} done, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed, {len(result.invalid)} invalid"
        + (f", {len(result.pending)} not finished" if result.pending else "")
        + f" in {result.seconds:.1f} s"
    ]
    for url, stats in result.servers.items():
        line = (
            f"  {url}  {stats['done']} done, {stats['failed']} failed, "
            f"{stats['execution_s']:.1f} s executing, {stats['items_per_min']:.1f} items/min"
        )
        if "unreachable" in stats:
            line += f"  (unreachable: {stats['unreachable']})"
        lines.append(line)
    lines.append(f"manifest {out / MANIFEST}")
    return "\n".join(lines)


# =========================================================================== command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``facediffuser queue``."""
    parser.add_argument(
        "workflow",
        nargs="?",
        help="API-format workflow, or a UI workflow (converted with the server's /object_info); "
        "default: the shipped one-person graph for one reference, two-person for 2-4",
    )
    parser.add_argument(
        "-s",
        "--server",
        action="append",
        default=[],
        metavar="URL",
        help=f"ComfyUI server; repeat to spread the batch over several ({DEFAULT_SERVER})",
    )
    parser.add_argument("-b", "--batch", help="CSV or JSONL file: one prompt per row")
    parser.add_argument("--out", default="queue-out", help="output folder with manifest.json")
    parser.add_argument("-p", "--prompt", help="prompt with one <|image|> per person")
    parser.add_argument(
        "-r",
        "--ref",
        action="append",
        default=[],
        metavar="IMAGE",
        help="reference photo, uploaded to the server; repeat in marker order",
    )
    parser.add_argument("--negative", help="negative prompt text")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--scene-end", type=float, help="fraction of steps by the TDM alone")
    parser.add_argument("--fusion-end", type=float, help="fraction of steps when fusion ends")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--batch-size", type=int, help="images per prompt")
    parser.add_argument(
        "--depth", type=int, default=1, help="our prompts queued on one server at a time (1)"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds one item may take (3600)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="connection retries (exponential backoff) before a server is given up (5)",
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between result polls (1)")
    parser.add_argument(
        "--interrupt",
        action="store_true",
        help="on Ctrl-C also cancel our prompts still running or queued on the servers",
    )
    parser.add_argument("--no-ws", action="store_true", help="poll only, no websocket")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    """``facediffuser queue``: build items from the options / batch file and run them."""
    defaults = {
        "prompt": args.prompt,
        "negative": args.negative,
        "seed": args.seed,
        "steps": args.steps,
        "cfg": args.cfg,
        "scene_end": args.scene_end,
        "fusion_end": args.fusion_end,
        "width": args.width,
        "height": args.height,
        "batch_size": args.batch_size,
    }
    if args.depth < 1 or args.retries < 0 or args.timeout <= 0 or args.poll <= 0:
        raise QueueError("--depth must be >= 1, --retries >= 0, --timeout and --poll > 0")
    cwd = Path.cwd()
    checked = {}
    for key, value in defaults.items():
        try:
            checked[key] = _convert(key, value, cwd)
        except ValueError as exc:
            raise QueueError(f"--{key.replace('_', '-')}: {exc}") from None
    if args.ref:
        try:
            checked["references"] = _convert("references", list(args.ref), cwd)
        except ValueError as exc:
            raise QueueError(f"--ref: {exc}") from None
    defaults = {k: v for k, v in checked.items() if v is not None}
    if args.batch:
        items = read_batch(args.batch, defaults)
    else:
        item = make_item("0001", 0, {}, defaults, cwd)
        if item.error:
            raise QueueError(item.error)
        items = [item]
    options = QueueOptions(
        servers=args.server or [DEFAULT_SERVER],
        out=Path(args.out),
        depth=args.depth,
        poll=args.poll,
        timeout=args.timeout,
        retries=args.retries,
        interrupt=args.interrupt,
        websocket=not args.no_ws,
        progress=not args.no_progress,
    )
    result = run_queue(items, options, workflow=args.workflow)
    print(summary(result, options.out))
    return result.exit_code
