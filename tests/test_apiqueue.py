"""``facediffuser queue``: workflow conversion, settings by meaning, batch files, manifest,
and the client against an in-process fake ComfyUI that answers with recorded real responses
(tests/fixtures/comfyui, written by record.py from ComfyUI 0.8.0 with the tiny models),
including dropped connections, 400s with node errors, execution errors and a restart.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import pytest

from facediffuser_core import apiqueue as aq
from facediffuser_core.cli import main

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "comfyui"
API_DIR = ROOT / "workflows" / "api"
UI_FILES = sorted(p.name for p in (ROOT / "workflows").glob("*.json"))
PORTRAITS = ["facediffuser_person_1.png", "facediffuser_person_2.png"]


def fixture(name: str):
    return json.loads((FIX / name).read_text())


def api(name: str) -> dict:
    return json.loads((API_DIR / name).read_text())


# =========================================================================== the fake server


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


@pytest.fixture(autouse=True)
def _quiet_aiohttp():
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


@pytest.fixture()
def fake():
    server = FakeComfy()
    yield server
    server.close()


@pytest.fixture()
def two_fakes():
    servers = [FakeComfy(), FakeComfy()]
    yield servers
    for server in servers:
        server.close()


@pytest.fixture()
def refs(tmp_path):
    him, her = tmp_path / "him.png", tmp_path / "her.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 150, 120)).save(him)
    Image.new("RGB", (32, 32), (120, 150, 200)).save(her)
    return him, her


def options(tmp_path, servers, **kw) -> aq.QueueOptions:
    settings = dict(
        servers=[s.url if isinstance(s, FakeComfy) else s for s in servers],
        out=tmp_path / "out",
        poll=0.02,
        backoff=0.01,
        backoff_max=0.05,
        request_timeout=5.0,
        progress=False,
    )
    settings.update(kw)
    return aq.QueueOptions(**settings)


def items(n: int, refs, **settings) -> list[aq.BatchItem]:
    him, her = refs
    out = []
    for i in range(n):
        values = {
            "prompt": f"a man <|image|> and a woman <|image|> scene {i}",
            "references": [str(him), str(her)],
            "seed": i,
            "steps": 4,
            **settings,
        }
        out.append(aq.BatchItem(key=f"item{i:02d}", row=i + 2, settings=values))
    return out


def manifest(tmp_path) -> dict:
    return json.loads((tmp_path / "out" / "manifest.json").read_text())


def submitted_keys(servers) -> list[int]:
    """The seed of every prompt the servers accepted (one per submission)."""
    return [g["20"]["inputs"]["seed"] for s in servers for _, g in s.received if "20" in g]


# =========================================================================== UI -> API


@pytest.mark.parametrize("name", UI_FILES)
def test_ui_workflow_converts_to_its_api_twin_exactly(name):
    ui = json.loads((ROOT / "workflows" / name).read_text())
    assert aq.is_ui_workflow(ui)
    assert aq.ui_to_api(ui, fixture("object_info.json")) == api(name)


def test_ui_converter_follows_reroutes_bypass_and_primitives():
    info = fixture("object_info.json")
    ui = json.loads((ROOT / "workflows" / "facediffuser_one_person.json").read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    # route VAE Decode's samples through a Reroute, bypass a node in front of Save Image,
    # and feed the seed from a PrimitiveNode (the target keeps the value in its widgets)
    link = next(lk for lk in ui["links"] if lk[3] == 30 and lk[4] == 0)
    ui["nodes"].append(
        {
            "id": 90,
            "type": "Reroute",
            "inputs": [{"name": "", "link": 900}],
            "outputs": [{"links": [link[0]]}],
            "mode": 0,
        }
    )
    ui["links"].append([900, link[1], link[2], 90, 0, "LATENT"])
    link[1], link[2] = 90, 0
    ui["nodes"].append(
        {
            "id": 91,
            "type": "ImageInvert",
            "mode": 4,
            "inputs": [{"name": "image", "type": "IMAGE", "link": 901}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [902]}],
        }
    )
    save_link = next(lk for lk in ui["links"] if lk[3] == 31)
    ui["links"].append([901, save_link[1], save_link[2], 91, 0, "IMAGE"])
    save_link[1], save_link[2] = 91, 0
    ui["nodes"].append(
        {
            "id": 92,
            "type": "PrimitiveNode",
            "widgets_values": [7, "fixed"],
            "outputs": [{"type": "INT", "links": [903]}],
            "mode": 0,
        }
    )
    nodes[20]["inputs"].append(
        {"name": "seed", "type": "INT", "link": 903, "widget": {"name": "seed"}}
    )
    ui["links"].append([903, 92, 0, 20, 6, "INT"])
    ui["nodes"].append({"id": 93, "type": "Note", "widgets_values": ["hello"], "mode": 0})
    converted = aq.ui_to_api(ui, info)
    twin = api("facediffuser_one_person.json")
    assert converted == twin  # same graph: helpers vanish, links go to the real sources


def test_ui_converter_names_a_node_type_the_server_lacks():
    ui = json.loads((ROOT / "workflows" / "facediffuser_one_person.json").read_text())
    info = {k: v for k, v in fixture("object_info.json").items() if k != "FaceDiffuserKSampler"}
    with pytest.raises(aq.QueueError, match=r"node 20 'Face-diffuser KSampler \(SNF\)'.*install"):
        aq.ui_to_api(ui, info)


# =========================================================================== settings


def test_settings_go_to_the_nodes_that_mean_them():
    graph = aq.apply_settings(
        api("facediffuser_one_person.json"),
        {
            "prompt": "a man <|image|> on a boat",
            "references": ["me.png"],
            "seed": 11,
            "steps": 9,
            "cfg": 3.5,
            "scene_end": 0.2,
            "fusion_end": 0.7,
            "width": 256,
            "height": 320,
            "batch_size": 2,
            "negative": "blurry",
        },
    )
    assert graph["10"]["inputs"]["prompt"] == "a man <|image|> on a boat"
    assert graph["3"]["inputs"]["image"] == "me.png"
    k = graph["20"]["inputs"]
    assert (k["seed"], k["steps"], k["cfg"], k["scene_end"], k["fusion_end"]) == (
        11,
        9,
        3.5,
        0.2,
        0.7,
    )
    assert graph["12"]["inputs"] == {"width": 256, "height": 320, "batch_size": 2}
    assert graph["11"]["inputs"]["text"] == "blurry"
    assert api("facediffuser_one_person.json")["20"]["inputs"]["seed"] == 3407  # not mutated


def test_settings_in_the_guider_graph_reach_noise_scheduler_and_guider():
    graph = aq.apply_settings(
        api("facediffuser_guider_advanced.json"),
        {"seed": 5, "steps": 12, "cfg": 4.0, "fusion_end": 0.5},
    )
    assert graph["21"]["inputs"]["noise_seed"] == 5
    assert graph["23"]["inputs"]["steps"] == 12
    assert graph["20"]["inputs"]["cfg"] == 4.0 and graph["20"]["inputs"]["fusion_end"] == 0.5
    assert aq.graph_settings(graph)["seed"] == 5


def test_fewer_references_unwire_and_prune_a_persons_nodes():
    graph = aq.apply_settings(api("facediffuser_two_people.json"), {"references": ["a.png"]})
    assert "person_2" not in graph["10"]["inputs"] and "person_2" not in graph["32"]["inputs"]
    assert "4" not in graph and "7" not in graph  # Load Image + Face Crop of person 2
    assert graph["3"]["inputs"]["image"] == "a.png" and "5" in graph  # shared loader kept
    assert [c.nodes for c in aq.person_chains(graph)] == [("6", "3")]


def test_more_references_copy_person_ones_chain():
    base = api("facediffuser_two_people.json")
    graph = aq.apply_settings(base, {"references": ["a.png", "b.png", "c.png", "d.png"]})
    chains = aq.person_chains(graph)
    assert [graph[c.load_image]["inputs"]["image"] for c in chains] == [
        "a.png",
        "b.png",
        "c.png",
        "d.png",
    ]
    crop3, load3 = chains[2].nodes
    assert graph[crop3]["class_type"] == "FaceDiffuserFaceCrop"
    assert graph[crop3]["inputs"]["images"] == [load3, 0]
    assert graph[crop3]["inputs"]["face_analysis"] == ["5", 0]  # shared, not copied
    assert graph[load3]["_meta"]["title"] == "Person 3 (binds marker 3)"
    # wired into Subject Encode and Identity Similarity alike
    assert graph["10"]["inputs"]["person_3"] == [crop3, 0]
    assert graph["32"]["inputs"]["person_4"] == [chains[3].nodes[0], 0]
    assert len(graph) == len(base) + 4


def test_a_workflow_with_several_subject_encodes_takes_no_prompt_or_people_by_meaning():
    regional = api("facediffuser_regional_two_people.json")
    with pytest.raises(aq.QueueError, match="has 2 Subject Encode nodes .* the prompt of a batch"):
        aq.apply_settings(regional, {"prompt": "a man <|image|> skiing"})
    with pytest.raises(aq.QueueError, match="references of a batch row"):
        aq.apply_settings(regional, {"references": ["a.png", "b.png"]})
    seeded = aq.apply_settings(regional, {"seed": 7, "steps": 12})  # the rest still applies
    assert any(n["inputs"].get("seed") == 7 for n in seeded.values())


def test_a_setting_without_a_node_is_refused():
    graph = {k: v for k, v in api("facediffuser_one_person.json").items() if k != "12"}
    with pytest.raises(aq.QueueError, match="batch_size was given but the workflow has no node"):
        aq.apply_settings(graph, {"batch_size": 2})
    wired = api("facediffuser_one_person.json")
    wired["20"]["inputs"]["seed"] = ["99", 0]
    with pytest.raises(aq.QueueError, match="wired from node 99"):
        aq.apply_settings(wired, {"seed": 1})


def test_check_graph_refuses_marker_mismatch_and_bad_boundaries():
    two = api("facediffuser_two_people.json")
    aq.check_graph(two)
    with pytest.raises(aq.QueueError, match="1 <\\|image\\|> marker\\(s\\) but 2 reference"):
        aq.check_graph(aq.apply_settings(two, {"prompt": "a man <|image|> at sea"}))
    with pytest.raises(aq.QueueError, match=r"scene_end \(0.7\) and fusion_end \(0.5\)"):
        aq.check_graph(aq.apply_settings(two, {"scene_end": 0.7, "fusion_end": 0.5}))


# =========================================================================== batch files


def test_csv_batch_rows_become_typed_items(tmp_path, refs):
    (tmp_path / "batch.csv").write_text(
        "id,prompt,references,seed,steps,cfg,batch,Scene-End\n"
        "beach,a man <|image|> and a woman <|image|> at the beach,him.png;her.png,1,20,4.5,2,0.3\n"
        ",a woman <|image|> in a cafe,her.png,2,,,,\n"
        "\n"
        "bad,a man <|image|> at sea,him.png;her.png,3,,,,\n"
        "nofile,a man <|image|> at sea,nothere.png,4,,,,\n"
        "seedy,a man <|image|> at sea,him.png,x,,,,\n"
        "beach,a man <|image|> at sea,him.png,5,,,,\n"
    )
    rows = aq.read_batch(tmp_path / "batch.csv", {"steps": 8, "width": 64})
    first = rows[0]
    assert first.key == "beach" and first.error is None
    assert first.settings == {
        "steps": 20,
        "width": 64,
        "prompt": "a man <|image|> and a woman <|image|> at the beach",
        "references": [str(refs[0]), str(refs[1])],
        "seed": 1,
        "cfg": 4.5,
        "batch_size": 2,
        "scene_end": 0.3,
    }
    assert rows[1].key == "0002" and rows[1].settings["steps"] == 8  # default kept
    errors = {r.key: r.error for r in rows[2:]}
    assert "line 5: the prompt has 1 <|image|> marker(s) but 2" in errors["bad"]
    assert "line 6: reference image 'nothere.png' not found" in errors["nofile"]
    assert "line 7: seed must be a whole number" in errors["seedy"]
    assert "line 8: id 'beach' repeats line 2" in errors["0006"]


def test_jsonl_batch_and_person_columns(tmp_path, refs):
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"prompt": "a man <|image|> rowing", "person_1": "him.png", "seed": 3}) + "\n"
        "# a comment\n"
        + json.dumps(
            {
                "id": "x",
                "prompt": "a man <|image|> and a woman <|image|> dancing",
                "references": ["him.png", "her.png"],
                "width": 100,
            }
        )
        + "\n"
        "{not json\n"
    )
    rows = aq.read_batch(tmp_path / "b.jsonl")
    assert rows[0].settings["references"] == [str(refs[0])] and rows[0].settings["seed"] == 3
    assert "multiple of 8" in rows[1].error
    assert rows[2].error.startswith("line 4 is not JSON")


def test_unknown_column_stops_the_batch_with_the_known_ones(tmp_path):
    (tmp_path / "b.csv").write_text("prompt,sede\na man <|image|>,1\n")
    with pytest.raises(aq.QueueError, match="unknown column\\(s\\) sede: known are id, prompt"):
        aq.read_batch(tmp_path / "b.csv")


# =========================================================================== errors, manifest


def test_recorded_400s_read_with_node_titles():
    graph = api("facediffuser_one_person.json")
    text = aq.describe_rejection(fixture("prompt_400_node_errors.json"), graph)
    assert text.startswith("node 1 'Load Face-diffuser SDM': Custom validation failed")
    assert "SDM/not_there.bin" in text
    assert aq.is_server_problem(fixture("prompt_400_node_errors.json"))
    missing = aq.describe_rejection(fixture("prompt_400_missing_node.json"), graph)
    assert "NoSuchNodeAnywhere does not exist (node 31 'Save Image'): install" in missing
    assert aq.is_server_problem(fixture("prompt_400_missing_node.json"))
    wrong_value = copy.deepcopy(fixture("prompt_400_node_errors.json"))
    wrong_value["node_errors"]["1"]["errors"][0]["extra_info"]["input_name"] = "prompt"
    assert not aq.is_server_problem(wrong_value)


def test_recorded_execution_error_reads_with_the_node_title():
    (entry,) = fixture("history_error.json").values()
    text = aq.describe_execution_error(entry, api("facediffuser_one_person.json"))
    assert text.startswith(
        "node 10 'Face-diffuser Subject Encode' (FaceDiffuserSubjectEncode) failed: PromptError: "
        "the prompt has 2 <|image|> marker(s) but 1 reference image(s)"
    )


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    m = aq.Manifest(tmp_path)
    m.update("a", status="done")
    before = (tmp_path / "manifest.json").read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(aq.manifest.os, "replace", broken_replace)
    with pytest.raises(OSError):
        m.update("b", status="done")
    assert (tmp_path / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


# =========================================================================== against the fake


def test_one_item_end_to_end(tmp_path, fake, refs):
    lines: list[str] = []
    result = aq.run_queue(items(1, refs), options(tmp_path, [fake]), log=lines.append)
    assert result.done == ["item00"] and result.exit_code == 0
    ((prompt_id, graph),) = fake.received
    uploaded = sorted(fake.uploads)
    assert len(uploaded) == 2 and all(n.startswith("fdq_") for n in uploaded)
    assert [graph["3"]["inputs"]["image"], graph["4"]["inputs"]["image"]] == [
        aq.upload_name(refs[0], aq.jobs._sha(refs[0])),
        aq.upload_name(refs[1], aq.jobs._sha(refs[1])),
    ]
    assert fake.uploads[graph["3"]["inputs"]["image"]] == refs[0].read_bytes()
    assert (
        graph["10"]["inputs"]["prompt"].endswith("scene 0") and graph["20"]["inputs"]["seed"] == 0
    )
    record = manifest(tmp_path)["items"]["item00"]
    assert record["status"] == "done" and record["prompt_id"] == prompt_id
    assert record["server"] == fake.url and record["seed"] == 0 and record["attempts"] == 1
    assert record["texts"] == {"32": ["image 1: person 1: 0.00"]}
    assert set(record["timings"]) == {"submit_s", "wait_s", "execution_s", "download_s"}
    (image,) = record["outputs"]  # the SaveImage only: PreviewImage files stay on the server
    assert (tmp_path / "out" / image).read_bytes() == fake.png
    assert any(line.startswith("done    item00") for line in lines)


def test_batch_spreads_over_servers_least_busy_first(tmp_path, two_fakes, refs):
    busy, free = two_fakes
    busy.external = 3  # someone else's prompts wait there
    busy.exec_time = free.exec_time = 0.1
    result = aq.run_queue(items(6, refs), options(tmp_path, [busy, free]))
    assert sorted(result.done) == [f"item{i:02d}" for i in range(6)]
    assert free.received[0][1]["20"]["inputs"]["seed"] == 0  # first item: the idle server
    assert busy.received and free.received  # both worked
    assert sorted(submitted_keys(two_fakes)) == list(range(6))  # each item exactly once
    stats = manifest(tmp_path)["servers"]
    assert stats[busy.url]["done"] + stats[free.url]["done"] == 6
    assert stats[free.url]["items_per_min"] > 0 and stats[free.url]["websocket"] is True


def test_depth_bounds_our_prompts_per_server(tmp_path, fake, refs):
    fake.paused = True
    seen = []

    def watch():
        for _ in range(500):  # until two are queued, then 0.2 s more: never a third
            seen.append(len(fake.queue))
            if seen[-1] >= 2 and seen.count(seen[-1]) > 20:
                break
            time.sleep(0.01)
        fake.paused = False

    threading.Thread(target=watch, daemon=True).start()
    result = aq.run_queue(items(4, refs), options(tmp_path, [fake], depth=2))
    assert len(result.done) == 4 and max(seen) == 2


def test_resume_skips_done_and_collects_queued_without_resubmitting(tmp_path, fake, refs):
    fake.exec_time = 0.3
    stop = threading.Event()

    def log(line):
        if line.startswith("done"):
            stop.set()

    batch = items(4, refs)
    first = aq.run_queue(batch, options(tmp_path, [fake], depth=2), log=log, stop=stop)
    assert first.interrupted and first.exit_code == 130
    assert len(first.done) == 1 and first.pending
    records = manifest(tmp_path)["items"]
    queued = [k for k, r in records.items() if r["status"] == "submitted"]
    assert queued, records  # depth 2: one was still on the server when we stopped
    fake.exec_time = 0.02
    second = aq.run_queue(batch, options(tmp_path, [fake]))
    assert second.skipped == first.done and second.exit_code == 0
    assert sorted(first.done + second.done) == [b.key for b in batch]
    assert sorted(submitted_keys([fake])) == [0, 1, 2, 3]  # nothing queued twice
    for key in queued:  # collected from the server, same prompt id as before
        assert manifest(tmp_path)["items"][key]["prompt_id"] == records[key]["prompt_id"]


def test_changed_inputs_run_again(tmp_path, fake, refs):
    aq.run_queue(items(2, refs), options(tmp_path, [fake]))
    changed = items(2, refs)
    changed[1].settings["cfg"] = 2.0
    result = aq.run_queue(changed, options(tmp_path, [fake]))
    assert result.skipped == ["item00"] and result.done == ["item01"]
    assert fake.received[-1][1]["20"]["inputs"]["cfg"] == 2.0


def test_connection_dropped_after_the_server_took_the_prompt(tmp_path, fake, refs):
    fake.drop_after_accept = 1
    result = aq.run_queue(items(3, refs), options(tmp_path, [fake]))
    assert len(result.done) == 3
    assert sorted(submitted_keys([fake])) == [0, 1, 2]  # the dropped POST was not repeated


def test_dropped_polls_and_uploads_are_retried(tmp_path, fake, refs):
    fake.drop[("GET", "history")] = 3
    fake.drop[("POST", "upload")] = 1
    lines = []
    result = aq.run_queue(items(2, refs), options(tmp_path, [fake]), log=lines.append)
    assert len(result.done) == 2 and sorted(submitted_keys([fake])) == [0, 1]
    assert any("retry 1 of 5" in line for line in lines)


def test_server_restart_loses_the_queue_and_the_item_is_queued_again(tmp_path, fake, refs):
    fake.paused = True
    lines = []

    def restart_when_queued():
        for _ in range(500):
            if fake.received:
                break
            time.sleep(0.01)
        fake.restart()  # queue and history gone, as in ComfyUI
        fake.paused = False

    threading.Thread(target=restart_when_queued, daemon=True).start()
    result = aq.run_queue(items(2, refs), options(tmp_path, [fake]), log=lines.append)
    assert sorted(result.done) == ["item00", "item01"]
    record = manifest(tmp_path)["items"]["item00"]
    assert record["attempts"] == 2
    assert fake.uploads  # uploads were redone or kept; the graph validated against them


def test_a_server_that_goes_away_hands_its_items_to_the_other(tmp_path, two_fakes, refs):
    a, b = two_fakes
    a.paused = True
    lines = []

    def kill_a():
        for _ in range(500):
            if a.received:
                break
            time.sleep(0.01)
        a._call(a._stop())  # gone for good

    threading.Thread(target=kill_a, daemon=True).start()
    result = aq.run_queue(items(4, refs), options(tmp_path, [a, b], retries=2), log=lines.append)
    assert sorted(result.done) == [f"item{i:02d}" for i in range(4)]
    assert any(f"server {a.url}: giving up after 2 retries" in line for line in lines)
    assert manifest(tmp_path)["servers"][a.url]["unreachable"]
    a._call(a._start())  # for the fixture's close()


def test_node_errors_fail_the_item_readably_and_the_batch_goes_on(tmp_path, fake, refs):
    batch = items(3, refs)
    batch[1].settings["prompt"] = "a man <|image|> and a woman <|image|> REJECT"
    lines = []
    result = aq.run_queue(batch, options(tmp_path, [fake]), log=lines.append)
    assert result.failed == ["item01"] and sorted(result.done) == ["item00", "item02"]
    assert result.exit_code == 1
    error = manifest(tmp_path)["items"]["item01"]["error"]
    assert error.startswith("rejected by ComfyUI: node 10 'Face-diffuser Subject Encode': ")
    assert "the test server refuses this prompt" in error


def test_execution_error_in_history_fails_the_item_readably(tmp_path, fake, refs):
    batch = items(2, refs)
    batch[0].settings["prompt"] = "a man <|image|> and a woman <|image|> FAIL"
    result = aq.run_queue(batch, options(tmp_path, [fake]))
    assert result.failed == ["item00"] and result.done == ["item01"]
    error = manifest(tmp_path)["items"]["item00"]["error"]
    assert error.startswith("node 10 'Face-diffuser Subject Encode' (FaceDiffuserSubjectEncode)")


def test_missing_model_moves_items_to_the_server_that_has_it(tmp_path, two_fakes, refs):
    lacking, having = two_fakes
    lacking.missing_models = {"SDM/pytorch_model.bin"}
    lines = []
    result = aq.run_queue(items(3, refs), options(tmp_path, [lacking, having]), log=lines.append)
    assert len(result.done) == 3 and not lacking.received
    assert any(
        f"server {lacking.url} cannot run facediffuser_two_people.json: node 1 "
        "'Load Face-diffuser SDM'" in line
        for line in lines
    )


def test_missing_model_everywhere_fails_items_with_the_reason(tmp_path, fake, refs):
    fake.missing_models = {"SDM/pytorch_model.bin"}
    result = aq.run_queue(items(2, refs), options(tmp_path, [fake]))
    assert sorted(result.failed) == ["item00", "item01"]
    error = manifest(tmp_path)["items"]["item01"]["error"]
    assert "no server" in error and "SDM/pytorch_model.bin" in error


def test_a_crashing_worker_does_not_hang_the_batch(tmp_path, fake, refs, monkeypatch):
    def broken(self, job, entry):
        raise RuntimeError("bug")

    monkeypatch.setattr(aq.server._Server, "_finished", broken)
    result = aq.run_queue(items(2, refs), options(tmp_path, [fake]))
    assert sorted(result.failed) == ["item00", "item01"]
    error = manifest(tmp_path)["items"]["item01"]["error"]
    assert "internal error RuntimeError: bug" in error


def test_unreachable_servers(tmp_path, fake, refs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    lines = []
    result = aq.run_queue(items(2, refs), options(tmp_path, [dead, fake]), log=lines.append)
    assert len(result.done) == 2
    assert any(f"server {dead}: connection refused; not used" in line for line in lines)
    with pytest.raises(aq.QueueError, match="no ComfyUI server is reachable.*connection refused"):
        aq.run_queue(items(1, refs), options(tmp_path, [dead]))


def test_timeout_cancels_the_prompt_on_the_server(tmp_path, fake, refs):
    fake.paused = True
    result = aq.run_queue(items(1, refs), options(tmp_path, [fake], timeout=0.3))
    assert result.failed == ["item00"]
    assert "no result within" in manifest(tmp_path)["items"]["item00"]["error"]
    prompt_id = fake.received[0][0]
    assert prompt_id in fake.deleted and prompt_id in fake.interrupts


def test_websocket_step_progress_and_polling_fallback(tmp_path, fake, refs):
    fake.exec_time = 0.3
    seen = []
    original = aq.server._Server.on_event

    def spy(self, kind, data):
        original(self, kind, data)
        seen.extend(self.progress.values())

    aq.server._Server.on_event = spy
    try:
        aq.run_queue(items(1, refs), options(tmp_path, [fake]))
    finally:
        aq.server._Server.on_event = original
    assert (8, 8) in seen and (1, 8) in seen  # the recorded run's 8 steps
    result = aq.run_queue(items(1, refs), options(tmp_path / "poll", [fake], websocket=False))
    assert result.done == ["item00"]
    assert manifest(tmp_path / "poll")["servers"][fake.url]["websocket"] is False


def test_ui_workflow_is_converted_with_the_servers_object_info(tmp_path, fake, refs):
    ui = ROOT / "workflows" / "facediffuser_one_person.json"
    batch = [
        aq.BatchItem(
            "one", 2, {"prompt": "a man <|image|> rowing", "references": [str(refs[0])], "steps": 3}
        )
    ]
    result = aq.run_queue(batch, options(tmp_path, [fake]), workflow=ui)
    assert result.done == ["one"]
    graph = fake.received[0][1]
    expected = aq.apply_settings(api("facediffuser_one_person.json"), {"steps": 3})
    assert {k: n["class_type"] for k, n in graph.items()} == {
        k: n["class_type"] for k, n in expected.items()
    }
    assert graph["20"]["inputs"]["steps"] == 3 and graph["10"]["inputs"]["prompt"].endswith(
        "rowing"
    )


def test_numbers_are_checked_against_the_servers_object_info(tmp_path, fake, refs):
    """A server whose pack allows cfg up to 50 is honoured (the pack here says 30), and a
    row beyond it is refused naming row, setting, range and server; /object_info is read
    once per node class, shared by planning and the server's workflow check."""
    fake.object_info = copy.deepcopy(fake.object_info)
    fake.object_info["FaceDiffuserKSampler"]["input"]["required"]["cfg"][1]["max"] = 50.0
    batch = items(2, refs)
    batch[0].settings["cfg"] = 40.0
    batch[1].settings["cfg"] = 60.0
    result = aq.run_queue(batch, options(tmp_path, [fake]))
    assert result.done == ["item00"] and result.invalid == ["item01"]
    assert fake.received[0][1]["20"]["inputs"]["cfg"] == 40.0
    assert manifest(tmp_path)["items"]["item01"]["error"] == (
        f"line 3: cfg 60 is out of range: FaceDiffuserKSampler.cfg on server {fake.url} takes "
        "0 to 50; give a value in that range"
    )
    asked = [c for c in fake.info_requests if c]
    assert asked and len(asked) == len(set(asked))


def test_a_row_must_fit_every_server_it_may_go_to(tmp_path, two_fakes, refs):
    wide, default = two_fakes
    wide.object_info = copy.deepcopy(wide.object_info)
    wide.object_info["FaceDiffuserKSampler"]["input"]["required"]["cfg"][1]["max"] = 50.0
    batch = items(1, refs, cfg=40.0)
    result = aq.run_queue(batch, options(tmp_path, [wide, default]))
    assert result.invalid == ["item00"] and not wide.received and not default.received
    error = manifest(tmp_path)["items"]["item00"]["error"]
    assert f"FaceDiffuserKSampler.cfg on server {default.url} takes 0 to 30" in error


def test_a_narrower_server_range_wins_and_the_packs_applies_without_one():
    graph = api("facediffuser_one_person.json")
    info = copy.deepcopy(fixture("object_info.json"))
    info["FaceDiffuserKSampler"]["input"]["required"]["steps"][1]["max"] = 20
    limits = aq.with_pack_limits(aq.server_limits(graph, info, "http://gpu1:8188"))
    aq.check_limits({"steps": 20, "cfg": 30.0, "seed": 2**64 - 1}, limits)
    with pytest.raises(
        aq.QueueError,
        match="steps 21 is out of range: FaceDiffuserKSampler.steps "
        "on server http://gpu1:8188 takes 1 to 20",
    ):
        aq.check_limits({"steps": 21}, limits)
    # a server without the pack gives no range for its inputs: the pack's own applies
    offline = aq.with_pack_limits(aq.server_limits(graph, {}, "http://bare:8188"))
    assert offline == aq.pack_limits()
    with pytest.raises(
        aq.QueueError,
        match=r"cfg 30.5 is out of range: .* \(no server gave its "
        r"range\) takes 0 to 30",
    ):
        aq.check_limits({"cfg": 30.5}, offline)
    with pytest.raises(aq.QueueError, match="seed -1 .* takes 0 to 2\\^64-1"):
        aq.check_limits({"seed": -1}, offline)
    # the guider graph: the stock nodes' ranges come from the server too
    stock = aq.server_limits(api("facediffuser_guider_advanced.json"), info, "http://gpu1:8188")
    assert {(lim.node_id, lim.input) for lim in stock} >= {
        ("RandomNoise", "noise_seed"),
        ("BasicScheduler", "steps"),
        ("FaceDiffuserSNFGuider", "cfg"),
    }


# =========================================================================== command line


def test_cli_batch_run_and_resume(tmp_path, fake, refs, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "batch.csv").write_text(
        "id,prompt,references,seed\n"
        "a,a man <|image|> and a woman <|image|> at the beach,him.png;her.png,1\n"
        "b,a woman <|image|> in a cafe,her.png,2\n"
        "c,a man <|image|> at sea,him.png;her.png,3\n"
    )
    args = [
        "queue",
        "-s",
        fake.url,
        "-b",
        "batch.csv",
        "--steps",
        "4",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        "out",
        "--no-progress",
        "--poll",
        "0.02",
    ]
    assert main(args) == 1  # row c is invalid
    out = capsys.readouterr().out
    assert "invalid c  line 4: the prompt has 1 <|image|> marker(s) but 2" in out
    assert "3 item(s): 2 done, 0 already done, 0 failed, 1 invalid" in out
    assert f"  {fake.url}  2 done, 0 failed" in out
    graphs = {g["20"]["inputs"]["seed"]: g for _, g in fake.received}
    assert set(graphs) == {1, 2}
    assert "4" not in graphs[2]  # one reference: the one-person graph
    assert graphs[1]["12"]["inputs"] == {"width": 64, "height": 64, "batch_size": 1}
    assert main(args) == 1
    assert "2 already done" in capsys.readouterr().out and len(fake.received) == 2


def test_cli_user_errors_exit_2(tmp_path, fake, capsys):
    assert (
        main(
            [
                "queue",
                "-s",
                fake.url,
                "--prompt",
                "no marker here",
                "--out",
                str(tmp_path / "o"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "has no <|image|> marker" in capsys.readouterr().err
    assert main(["queue", "-s", "ftp://x", "--out", str(tmp_path / "o")]) == 2
    assert "is not a ComfyUI address" in capsys.readouterr().err
    assert main(["queue", str(tmp_path / "none.json"), "-s", fake.url]) == 2
    assert "does not exist" in capsys.readouterr().err
    # an option out of the pack's range is refused at once, before any server is asked,
    # alone or as the default of a batch's rows
    batch = tmp_path / "rows.csv"
    batch.write_text('prompt,seed\n"a man <|image|> at sea",1\n', encoding="utf-8")
    for given in (["-p", "a man <|image|> at sea"], ["-b", str(batch)]):
        too_high = ["queue", "-s", fake.url, *given, "--cfg", "31"]
        assert main([*too_high, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "--cfg 31 is out of range: the Face-diffuser nodes take 0 to 30" in err
        assert not (tmp_path / "o").exists() and not fake.received


def test_ctrl_c_stops_cleanly_and_cancels_with_interrupt(tmp_path, fake, refs):
    fake.paused = True  # the item stays queued until we stop
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facediffuser_core",
            "queue",
            "-s",
            fake.url,
            "-r",
            str(refs[0]),
            "-p",
            "a man <|image|> waiting",
            "--out",
            str(out),
            "--no-progress",
            "--interrupt",
            "--poll",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for _ in range(600):
            if fake.received:
                break
            time.sleep(0.05)
        assert fake.received, "the item was never queued"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "1 not finished" in stdout
    prompt_id = fake.received[0][0]
    assert prompt_id in fake.deleted and prompt_id in fake.interrupts
    record = json.loads((out / "manifest.json").read_text())["items"]["0001"]
    assert record["status"] == "interrupted" and record["prompt_id"] == prompt_id


# =========================================================================== several photos


def test_batch_files_give_a_person_several_photos(tmp_path, refs):
    him, her = refs
    (tmp_path / "b.csv").write_text(
        "id,prompt,references\n"
        'two,a man <|image|> and a woman <|image|> dancing,"him.png,her.png;her.png"\n'
        'empty,a man <|image|> rowing,"him.png,"\n'
    )
    rows = aq.read_batch(tmp_path / "b.csv")
    assert rows[0].settings["references"] == [[str(him), str(her)], str(her)]
    assert rows[0].references == [him, her, her]  # every photo is uploaded
    assert "empty photo path" in rows[1].error
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"prompt": "a man <|image|> rowing", "references": [["him.png", "her.png"]]})
        + "\n"
        + json.dumps({"prompt": "a man <|image|> rowing", "person_1": "him.png,her.png"})
        + "\n"
    )
    rows = aq.read_batch(tmp_path / "b.jsonl")
    assert [r.settings["references"] for r in rows] == [[[str(him), str(her)]]] * 2
    assert aq.batch.regroup([[1, 2], "x"], ["a", "b", "c"]) == [["a", "b"], "c"]


def test_several_photos_get_a_chain_each_joined_by_image_batch():
    base = api("facediffuser_two_people.json")
    graph = aq.apply_settings(base, {"references": [["a.png", "b.png", "c.png"], "d.png"]})
    source = graph["10"]["inputs"]["person_1"]
    outer = graph[source[0]]
    assert outer["class_type"] == "ImageBatch"
    inner = graph[outer["inputs"]["image1"][0]]
    assert inner["class_type"] == "ImageBatch" and inner["inputs"]["image1"] == ["6", 0]

    def photo(link):  # Face Crop -> Load Image name
        crop = graph[link[0]]
        assert crop["class_type"] == "FaceDiffuserFaceCrop"
        assert crop["inputs"]["face_analysis"] == ["5", 0]  # the shared loader
        return graph[crop["inputs"]["images"][0]]["inputs"]["image"]

    names = [photo(inner["inputs"]["image1"]), photo(inner["inputs"]["image2"])]
    assert names + [photo(outer["inputs"]["image2"])] == ["a.png", "b.png", "c.png"]
    assert graph["32"]["inputs"]["person_1"] == source  # identity scored against all photos
    assert photo(graph["10"]["inputs"]["person_2"]) == "d.png"
    assert len(graph) == len(base) + 2 * 2 + 2  # two chain copies, two batch nodes
    aq.check_graph(graph)  # still two people
    assert aq.graph_settings(graph)["references"] == ["a.png", "d.png"]
    with pytest.raises(aq.QueueError, match="already joins several photos"):
        aq.apply_settings(graph, {"references": ["x.png", "y.png"]})


def test_several_photos_end_to_end_upload_each_photo_once(tmp_path, fake, refs):
    him, her = refs
    fake.object_info = dict(fake.object_info)
    fake.object_info["ImageBatch"] = {
        "input": {"required": {"image1": ["IMAGE"], "image2": ["IMAGE"]}},
        "output": ["IMAGE"],
    }
    batch = items(1, refs, references=[[str(him), str(her)], str(her)])
    result = aq.run_queue(batch, options(tmp_path, [fake]))
    assert result.done == ["item00"]
    ((_, graph),) = fake.received
    loads = sorted(n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage")
    name = {p: aq.upload_name(p, aq.jobs._sha(p)) for p in refs}
    assert loads == sorted([name[him], name[her], name[her]])
    assert len(fake.uploads) == 2  # her.png is uploaded once and used twice
    # a different grouping of the same photos is a different item
    digest = manifest(tmp_path)["items"]["item00"]
    regrouped = items(1, refs, references=[str(him), [str(her), str(her)]])
    again = aq.run_queue(regrouped, options(tmp_path, [fake]))
    assert again.done == ["item00"] and manifest(tmp_path)["items"]["item00"] != digest
