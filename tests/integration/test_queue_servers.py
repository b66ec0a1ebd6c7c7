"""``facediffuser queue`` against two real ComfyUI servers with the tiny models.

Two ComfyUI processes from one checkout, each with its own base directory (custom_nodes,
input, output, user) on its own loopback port, run a batch: the items are spread over both,
outputs downloaded, a second run resumes without queuing anything again, a model only one
server has sends the items there, and a server that dies mid-batch leaves its items to the
other. Needs what tests/integration/test_comfyui.py needs:

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/python \
        python -m pytest -q tests/integration/test_queue_servers.py
"""

from __future__ import annotations

import csv
import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from _host import AVAILABLE, ROOT, SKIP_REASON, ComfyServer

from facediffuser_core import apiqueue as aq
from facediffuser_core.batching import Row
from facediffuser_core.cli import main

SMALL, STEPS = 64, 8

if not AVAILABLE:
    pytest.skip(SKIP_REASON, allow_module_level=True)


@pytest.fixture(scope="module")
def servers(comfyui, tiny_models, tmp_path_factory):
    comfy_dir, python = comfyui
    bases = tmp_path_factory.mktemp("queue-servers")
    pair = [ComfyServer(comfy_dir, python, bases / name, tiny_models / "models") for name in "ab"]
    for server in pair:
        for image in (tiny_models / "input").iterdir():
            shutil.copy(image, server.base / "input" / image.name)
    # a model only server b has: items that need it must go there
    only_b = pair[1].base / "models" / "facediffuser" / "only-b"
    (only_b / "SDM").mkdir(parents=True)
    source = tiny_models / "models" / "facediffuser"
    (only_b / "SDM" / "pytorch_model.bin").symlink_to(source / "SDM" / "pytorch_model.bin")
    (only_b / "tokenizer").symlink_to(source / "tokenizer", target_is_directory=True)
    try:
        for server in pair:
            server.start()
        yield pair
    finally:
        for server in pair:
            server.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, servers):
    from PIL import Image

    folder = tmp_path_factory.mktemp("queue-photos")
    for name in ("facediffuser_person_1.png", "facediffuser_person_2.png"):
        shutil.copy(servers[0].base / "input" / name, folder / name.replace("facediffuser_", ""))
    Image.new("RGB", (96, 128), (20, 30, 120)).save(folder / "no_face.png")  # nothing to crop
    return folder


def _batch(folder: Path, rows: list[dict]) -> Path:
    path = folder / "batch.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "prompt", "references", "seed"])
        writer.writeheader()
        writer.writerows(rows)
    return path


ROWS = [
    {
        "id": "beach",
        "prompt": "a man <|image|> and a woman <|image|> at the beach",
        "references": "person_1.png;person_2.png",
        "seed": 1,
    },
    {
        "id": "cafe",
        "prompt": "a woman <|image|> in a cafe",
        "references": "person_2.png",
        "seed": 2,
    },
    {"id": "ski", "prompt": "a man <|image|> skiing", "references": "person_1.png", "seed": 3},
    {
        "id": "park",
        "prompt": "a woman <|image|> and a man <|image|> in a park",
        "references": "person_2.png;person_1.png",
        "seed": 4,
    },
    {
        "id": "noface",
        "prompt": "a man <|image|> and a woman <|image|> at sea",
        "references": "no_face.png;person_2.png",
        "seed": 5,
    },
    {
        "id": "wrong",
        "prompt": "a man <|image|> at sea",
        "references": "person_1.png;person_2.png",
        "seed": 6,
    },
]


def by_id(manifest: dict) -> dict[str, dict]:
    """The manifest's entries by row id (one per row here: no row changed)."""
    entries = list(manifest["entries"].values())
    assert len({r["id"] for r in entries}) == len(entries)
    return {r["id"]: r for r in entries}


def test_shipped_ui_workflows_are_their_api_twins_on_a_real_object_info(servers):
    """The queue takes API format; the drag-in UI files must stay the API twins' layouts."""
    from tests.ui_to_api import ui_to_api

    client = aq.ComfyClient(servers[0].url)
    for path in sorted((ROOT / "workflows").glob("*.json")):
        ui = json.loads(path.read_text())
        info = {t: client.object_info(t) for t in {n["type"] for n in ui["nodes"]}}
        twin = json.loads((ROOT / "workflows" / "api" / path.name).read_text())
        assert ui_to_api(ui, {k: v for k, v in info.items() if v}) == twin, path.name
        with pytest.raises(aq.QueueError, match=r"Export \(API\)"):
            aq.load_workflow(path)


def test_batch_over_two_servers_then_resume(servers, photos, tmp_path, capsys):
    batch = _batch(photos, ROWS)
    out = tmp_path / "out"
    args = [
        "queue",
        "-b",
        str(batch),
        "--out",
        str(out),
        "--steps",
        str(STEPS),
        "--width",
        str(SMALL),
        "--height",
        str(SMALL),
        "--no-progress",
        "--poll",
        "0.2",
    ]
    for server in servers:
        args += ["-s", server.url]
    code = main(args)
    stdout = capsys.readouterr().out
    print(stdout)
    assert code == 1, stdout  # one execution error, one invalid row
    manifest = json.loads((out / "manifest.json").read_text())
    items = by_id(manifest)
    done = sorted(k for k, r in items.items() if r["status"] == "done")
    assert done == ["beach", "cafe", "park", "ski"], items
    assert "wrong" not in items
    invalid = manifest["runs"][-1]["invalid"]["wrong"]
    assert "1 <|image|> marker(s) but 2 reference image(s)" in invalid
    assert items["noface"]["status"] == "failed"
    assert "node 6 'Face crop, person 1' (FaceDiffuserFaceCrop) failed" in items["noface"]["error"]
    assert "no face found" in items["noface"]["error"]
    for key in done:
        record = items[key]
        assert record["seed"] == ROWS[[r["id"] for r in ROWS].index(key)]["seed"]
        assert record["timings"]["execution_s"] > 0
        for rel in record["outputs"]:
            assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    used = {items[k]["server"] for k in done}
    assert used == {s.url for s in servers}, "both servers should have run items"
    stats = manifest["servers"]
    assert sum(stats[s.url]["done"] for s in servers) == 4
    assert all(stats[s.url]["websocket"] for s in servers)  # live progress was available
    for server in servers:
        assert f"  {server.url}  {stats[server.url]['done']} done" in stdout

    before = [s.history_count() for s in servers]
    assert main(args) == 1  # resume: the failed one runs again, finished ones do not
    again = capsys.readouterr().out
    assert "4 already done" in again
    # only 'noface' (failed) was queued again
    assert sum(s.history_count() for s in servers) == sum(before) + 1

    # a changed row runs again into a new entry: the first run's record and image stay
    changed = [
        dict(r, prompt="a woman <|image|> on a bench") if r["id"] == "cafe" else r for r in ROWS
    ]
    _batch(photos, changed)
    assert main(args) == 1
    assert "item cafe: its inputs changed" in capsys.readouterr().err
    cafes = [
        r
        for r in json.loads((out / "manifest.json").read_text())["entries"].values()
        if r["id"] == "cafe"
    ]
    assert len(cafes) == 2 and all(r["status"] == "done" for r in cafes)
    assert {r["inputs"]["prompt"] for r in cafes} == {
        ROWS[1]["prompt"],
        "a woman <|image|> on a bench",
    }
    assert all((out / r["outputs"][0]).is_file() for r in cafes)


def test_model_on_one_server_only_sends_the_items_there(servers, photos, tmp_path):
    workflow = json.loads((ROOT / "workflows/api/facediffuser_one_person.json").read_text())
    workflow["1"]["inputs"]["model_name"] = "only-b/SDM/pytorch_model.bin"
    path = tmp_path / "only_b.json"
    path.write_text(json.dumps(workflow))
    items = [
        Row(
            f"i{i}",
            0,
            {
                "references": [str(photos / "person_1.png")],
                "seed": i,
                "steps": 4,
                "width": SMALL,
                "height": SMALL,
            },
        )
        for i in range(2)
    ]
    lines: list[str] = []
    options = aq.QueueOptions(
        servers=[s.url for s in servers], out=tmp_path / "out", poll=0.2, progress=False
    )
    result = aq.run_queue(items, options, workflow=path, log=lines.append)
    assert sorted(result.done) == ["i0", "i1"], lines
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {r["server"] for r in manifest["entries"].values()} == {servers[1].url}
    assert any(
        f"server {servers[0].url} cannot run only_b.json: node 1 'Load Face-diffuser SDM'" in line
        for line in lines
    ), lines


def test_a_server_dying_mid_batch_leaves_its_items_to_the_other(servers, photos, tmp_path):
    """Runs last: it stops server b (the fixture's teardown copes with that)."""
    a, b = servers
    items = [
        Row(
            f"d{i}",
            0,
            {
                "references": [str(photos / "person_1.png")],
                "prompt": "a man <|image|> running",
                "seed": 10 + i,
                "steps": 24,
                "width": SMALL,
                "height": SMALL,
            },
        )
        for i in range(4)
    ]
    lines: list[str] = []

    def kill_b_once_it_works():
        for _ in range(1200):  # as soon as b runs one of ours
            try:
                with urllib.request.urlopen(f"{b.url}/prompt", timeout=5) as r:
                    if json.load(r)["exec_info"]["queue_remaining"]:
                        break
            except OSError:
                return
            time.sleep(0.1)
        b.stop()

    threading.Thread(target=kill_b_once_it_works, daemon=True).start()
    options = aq.QueueOptions(
        servers=[a.url, b.url],
        out=tmp_path / "out",
        poll=0.2,
        progress=False,
        retries=2,
        backoff=0.2,
        backoff_max=1.0,
    )
    result = aq.run_queue(items, options, log=lines.append)
    assert sorted(result.done) == [f"d{i}" for i in range(4)], lines
    assert any(f"server {b.url}: giving up after 2 retries" in line for line in lines), lines
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["servers"][b.url]["unreachable"]
    assert all(r["server"] == a.url for r in manifest["entries"].values())
