"""An in-process fake ComfyUI for the queue's tests: the endpoints ``facediffuser queue``
uses, answering with responses recorded from a real ComfyUI 0.8.0 with the tiny models
(tests/fixtures/comfyui, written by record.py): queue and history in memory (a restart loses
both, as in ComfyUI), one prompt at a time, the recorded websocket messages of a run
replayed to the prompt's client id, node classes, model names and uploaded images
validated; and the faults a test asks for (dropped connections, a paused queue, missing
models, other users' prompts).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections import deque
from pathlib import Path

from aiohttp import web

FIX = Path(__file__).resolve().parent / "fixtures" / "comfyui"
PORTRAITS = ["facediffuser_person_1.png", "facediffuser_person_2.png"]


def fixture(name: str):
    return json.loads((FIX / name).read_text())


def _replace_ids(obj, old: str, new: str):
    return json.loads(json.dumps(obj).replace(old, new))


class FakeComfy:
    """The ComfyUI endpoints the queue uses, answering from the recorded responses.

    Like ComfyUI, it keeps queue and history in memory (a restart loses both), runs one
    prompt at a time, replays the recorded websocket messages of a run to the prompt's
    client id, and validates node classes, model names and uploaded images.
    """

    def __init__(self, *, exec_time: float = 0.05):
        self.exec_time = exec_time
        self.object_info = fixture("object_info.json")
        self.png = (FIX / "output.png").read_bytes()
        self.port = 0
        self.external = 0  # other users' prompts, counted by GET /prompt
        self.missing_models: set[str] = set()
        self.drop: dict[tuple[str, str], int] = {}  # (method, first path part) -> count
        self.drop_after_accept = 0  # queue the prompt, then drop the connection
        self.paused = False
        self.received: list[tuple[str, dict]] = []  # every accepted prompt
        self.info_requests: list[str] = []  # the node class of every GET /object_info/<class>
        self.interrupts: list[str | None] = []
        self.deleted: list[str] = []
        self.uploads: dict[str, bytes] = {}
        self.counter = 0
        self._reset()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._start())

    def _reset(self) -> None:
        self.queue: deque = deque()
        self.running = None
        self.history: dict[str, dict] = {}
        self.sockets: dict[str, list] = {}
        self.number = 0

    # ------------------------------------------------------------ lifecycle

    def _call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 2**20)
        r = app.router
        r.add_get("/object_info", self.get_object_info)
        r.add_get("/object_info/{cls}", self.get_object_info)
        r.add_post("/prompt", self.post_prompt)
        r.add_get("/prompt", self.get_prompt)
        r.add_get("/queue", self.get_queue)
        r.add_post("/queue", self.post_queue)
        r.add_get("/history/{pid}", self.get_history)
        r.add_post("/upload/image", self.upload)
        r.add_get("/view", self.view)
        r.add_post("/interrupt", self.interrupt)
        r.add_get("/ws", self.websocket)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.worker = asyncio.ensure_future(self._execute())

    async def _stop(self) -> None:
        self.worker.cancel()
        for sockets in self.sockets.values():
            for ws in sockets:
                await ws.close()
        await self.runner.cleanup()

    def restart(self) -> None:
        """Like a ComfyUI restart: connections drop, queue and history are gone."""
        self._call(self._stop())
        self._reset()
        self._call(self._start())

    def kill(self) -> None:
        """Gone (connections refused) until :meth:`revive`, queue and history kept."""
        self._call(self._stop())

    def revive(self) -> None:
        self._call(self._start())

    def close(self) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------ handlers

    @web.middleware
    async def _middleware(self, request, handler):
        key = (request.method, request.path.split("/")[1])
        if self.drop.get(key, 0) > 0:
            self.drop[key] -= 1
            request.transport.close()
            raise ConnectionResetError("dropped by the test")
        return await handler(request)

    async def get_object_info(self, request):
        cls = request.match_info.get("cls")
        self.info_requests.append(cls or "")
        if cls is None:
            return web.json_response(self.object_info)
        info = self.object_info.get(cls)
        return web.json_response({cls: info} if info else {})

    def _validate(self, graph: dict):
        for node_id, node in graph.items():
            if node["class_type"] not in self.object_info:
                body = fixture("prompt_400_missing_node.json")
                body["error"]["message"] = (
                    f"Cannot execute because node {node['class_type']} does not exist."
                )
                body["error"]["details"] = f"Node ID '#{node_id}'"
                return body
        template = fixture("prompt_400_node_errors.json")
        recorded = template["node_errors"]["1"]
        for node_id, node in graph.items():
            inputs = node["inputs"]
            bad = None
            if node["class_type"].startswith("FaceDiffuserLoad"):
                if inputs["model_name"] in self.missing_models:
                    bad = ("model_name", f"model {inputs['model_name']!r} was not found")
            if node["class_type"] == "LoadImage":
                if inputs["image"] not in PORTRAITS and inputs["image"] not in self.uploads:
                    bad = ("image", f"Invalid image file: {inputs['image']}")
            prompt = inputs.get("prompt")
            if isinstance(prompt, str) and "REJECT" in prompt:
                bad = ("prompt", "the test server refuses this prompt")
            if bad:
                entry = copy.deepcopy(recorded)
                entry["class_type"] = node["class_type"]
                entry["errors"][0]["details"] = f"{bad[0]} - {bad[1]}"
                entry["errors"][0]["extra_info"]["input_name"] = bad[0]
                template["node_errors"] = {node_id: entry}
                return template
        return None

    async def post_prompt(self, request):
        body = await request.json()
        graph = body["prompt"]
        problem = self._validate(graph)
        if problem:
            return web.json_response(problem, status=400)
        recorded = fixture("prompt_ok.json")
        prompt_id = str(body.get("prompt_id") or recorded["prompt_id"])
        self.number += 1
        extra = {"client_id": body.get("client_id"), "create_time": int(time.time() * 1000)}
        self.queue.append([self.number, prompt_id, graph, extra, ["31"]])
        self.received.append((prompt_id, graph))
        if self.drop_after_accept > 0:
            self.drop_after_accept -= 1
            request.transport.close()
            raise ConnectionResetError("dropped after accepting the prompt")
        return web.json_response({**recorded, "prompt_id": prompt_id, "number": self.number})

    async def get_prompt(self, request):
        remaining = len(self.queue) + (self.running is not None) + self.external
        return web.json_response({"exec_info": {"queue_remaining": remaining}})

    async def get_queue(self, request):
        running = [self.running] if self.running else []
        return web.json_response({"queue_running": running, "queue_pending": list(self.queue)})

    async def post_queue(self, request):
        body = await request.json()
        for prompt_id in body.get("delete", []):
            self.deleted.append(prompt_id)
            self.queue = deque(e for e in self.queue if e[1] != prompt_id)
        return web.Response()

    async def get_history(self, request):
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def upload(self, request):
        form = await request.post()
        field = form["image"]
        self.uploads[field.filename] = field.file.read()
        return web.json_response({**fixture("upload_image.json"), "name": field.filename})

    async def view(self, request):
        name = request.query.get("filename", "")
        known = {
            i["filename"]
            for h in self.history.values()
            for out in h.get("outputs", {}).values()
            for i in out.get("images", [])
        }
        if name not in known:
            return web.Response(status=404)
        return web.Response(body=self.png, content_type="image/png")

    async def interrupt(self, request):
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.interrupts.append(body.get("prompt_id"))
        return web.Response()

    async def websocket(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = request.query.get("clientId", "")
        self.sockets.setdefault(client, []).append(ws)
        await ws.send_str(json.dumps({"type": "status", "data": {"sid": client}}))
        async for _ in ws:
            pass
        return ws

    # ------------------------------------------------------------ execution

    async def _send(self, client: str, message: dict) -> None:
        for ws in list(self.sockets.get(client, [])):
            try:
                await ws.send_str(json.dumps(message))
            except (ConnectionError, RuntimeError):
                pass

    async def _execute(self) -> None:
        recorded = fixture("ws_messages.json")
        messages = [m for m in recorded["messages"] if m["type"] != "status"]
        while True:
            if self.paused or not self.queue:
                await asyncio.sleep(0.005)
                continue
            self.running = self.queue.popleft()
            number, prompt_id, graph, extra, _ = self.running
            client = extra.get("client_id") or ""
            interrupted = False
            for message in messages:
                if message["type"] in ("execution_success", "executing") and (
                    message["data"].get("node") is None
                ):
                    continue
                if prompt_id in self.interrupts:
                    interrupted = True
                    break
                await self._send(client, _replace_ids(message, recorded["prompt_id"], prompt_id))
                await asyncio.sleep(self.exec_time / len(messages))
            self.history[prompt_id] = self._entry(graph, prompt_id, number, extra, interrupted)
            self.running = None
            kind = self.history[prompt_id]["status"]["status_str"]
            done = "execution_success" if kind == "success" else "execution_error"
            await self._send(client, {"type": done, "data": {"prompt_id": prompt_id}})
            await self._send(
                client, {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}
            )

    def _entry(self, graph, prompt_id, number, extra, interrupted) -> dict:
        encoders = [k for k, n in graph.items() if n["class_type"] == "FaceDiffuserSubjectEncode"]
        failing = any("FAIL" in graph[k]["inputs"].get("prompt", "") for k in encoders)
        if failing or interrupted:
            recorded = fixture("history_error.json")
            (old_id,) = recorded
            entry = _replace_ids(recorded[old_id], old_id, prompt_id)
            for message in entry["status"]["messages"]:
                if message[0] == "execution_error":
                    message[1]["node_id"] = encoders[0]
            if interrupted:
                entry["status"]["messages"] = [
                    ["execution_interrupted", {"prompt_id": prompt_id, "node_id": "20"}]
                ]
        else:
            recorded = fixture("history_success.json")
            (old_id,) = recorded
            entry = _replace_ids(recorded[old_id], old_id, prompt_id)
            outputs = {}
            for node_id, node in graph.items():
                if node["class_type"] in ("SaveImage", "PreviewImage"):
                    self.counter += 1
                    prefix = node["inputs"].get("filename_prefix", "ComfyUI_temp")
                    kind = "output" if node["class_type"] == "SaveImage" else "temp"
                    outputs[node_id] = {
                        "images": [
                            {
                                "filename": f"{prefix}_{self.counter:05d}_.png",
                                "subfolder": "",
                                "type": kind,
                            }
                        ]
                    }
                if node["class_type"] == "FaceDiffuserIdentitySimilarity":
                    outputs[node_id] = {"text": ["image 1: person 1: 0.00"]}
            entry["outputs"] = outputs
        entry["prompt"] = [number, prompt_id, graph, extra, ["31"]]
        return entry
