"""``facediffuser queue``: settings by meaning, rejections, and the client against an
in-process fake ComfyUI that answers with recorded real responses (tests/fake_comfy_server.py),
including dropped connections, 400s with node errors, execution errors, a restart, a server
that goes away, resume and Ctrl-C.
"""

from __future__ import annotations

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
from pathlib import Path

import pytest

from facediffuser_core import apiqueue as aq
from facediffuser_core.apiqueue import server as queue_server
from facediffuser_core.apiqueue import slot as queue_slot
from facediffuser_core.batching import Row, check_limits
from facediffuser_core.batching import manifest as batch_manifest
from facediffuser_core.cli import main
from facediffuser_core.errors import InputError

pytest.importorskip("aiohttp")
from tests.batch_renderers import portraits  # noqa: E402
from tests.fake_comfy_server import FakeComfy, fixture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "workflows" / "api"


def api(name: str) -> dict:
    return json.loads((API_DIR / name).read_text())


@pytest.fixture(autouse=True)
def _quiet_aiohttp():
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


@pytest.fixture()
def refs(tmp_path):
    return portraits(tmp_path)


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


def items(n: int, refs, **settings) -> list[Row]:
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
        out.append(Row(key=f"item{i:02d}", line=i + 2, settings=values))
    return out


def manifest(tmp_path, out: str = "out") -> dict:
    return json.loads((tmp_path / out / "manifest.json").read_text())


def entry(tmp_path, key: str, out: str = "out") -> dict:
    """The one manifest entry of row ``key``."""
    (found,) = [r for r in manifest(tmp_path, out)["entries"].values() if r["id"] == key]
    return found


def submitted_keys(servers) -> list[int]:
    """The seed of every prompt the servers accepted (one per submission)."""
    return [g["20"]["inputs"]["seed"] for s in servers for _, g in s.received if "20" in g]


# =========================================================================== workflows


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "workflows").glob("*.json")))
def test_a_ui_workflow_is_refused_naming_the_export_to_use(name):
    with pytest.raises(aq.QueueError, match=r"UI format .* Workflow > Export \(API\)"):
        aq.load_workflow(ROOT / "workflows" / name)
    assert aq.load_workflow(API_DIR / name) == api(name)  # its API twin loads as it is


def test_a_prompt_request_body_and_the_v3_list_names_load(tmp_path):
    graph = api("facediffuser_one_person.json")
    graph["10"]["inputs"]["people.person_1"] = graph["10"]["inputs"].pop("person_1")
    (tmp_path / "body.json").write_text(json.dumps({"prompt": graph, "client_id": "x"}))
    assert aq.load_workflow(tmp_path / "body.json") == api("facediffuser_one_person.json")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(aq.QueueError, match="not an API-format graph"):
        aq.load_workflow(tmp_path / "list.json")


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


def test_people_wired_with_a_gap_or_sharing_a_photo_are_refused():
    gap = api("facediffuser_two_people.json")
    gap["10"]["inputs"]["person_3"] = gap["10"]["inputs"].pop("person_2")
    with pytest.raises(aq.QueueError, match="has person_3 wired but not person_2"):
        aq.person_chains(gap)
    shared = api("facediffuser_two_people.json")
    shared["7"]["inputs"]["images"] = ["3", 0]
    with pytest.raises(aq.QueueError, match="same Load Image node"):
        aq.person_chains(shared)


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
    guider = aq.apply_settings(
        api("facediffuser_guider_advanced.json"), {"scene_end": 0.9, "fusion_end": 0.4}
    )
    with pytest.raises(aq.QueueError, match="'Face-diffuser SNF Guider'.*must satisfy"):
        aq.check_graph(guider)  # the guider's fractions are checked as the KSampler's


# =========================================================================== errors, ranges


def test_recorded_400s_read_with_node_titles():
    graph = api("facediffuser_one_person.json")
    text = aq.describe_rejection(fixture("prompt_400_node_errors.json"), graph)
    assert text.startswith("node 1 'Load Face-diffuser SDM': Custom validation failed")
    assert "SDM/not_there.bin" in text
    from facediffuser_core.apiqueue.graph import is_server_problem

    assert is_server_problem(fixture("prompt_400_node_errors.json"))
    missing = aq.describe_rejection(fixture("prompt_400_missing_node.json"), graph)
    assert "NoSuchNodeAnywhere does not exist (node 31 'Save Image'): install" in missing
    assert is_server_problem(fixture("prompt_400_missing_node.json"))
    wrong_value = copy.deepcopy(fixture("prompt_400_node_errors.json"))
    wrong_value["node_errors"]["1"]["errors"][0]["extra_info"]["input_name"] = "prompt"
    assert not is_server_problem(wrong_value)


def test_recorded_execution_error_reads_with_the_node_title():
    (record,) = fixture("history_error.json").values()
    text = aq.describe_execution_error(record, api("facediffuser_one_person.json"))
    assert text.startswith(
        "node 10 'Face-diffuser Subject Encode' (FaceDiffuserSubjectEncode) failed: PromptError: "
        "the prompt has 2 <|image|> marker(s) but 1 reference image(s)"
    )


def test_a_narrower_server_range_wins_and_the_packs_applies_without_one():
    graph = api("facediffuser_one_person.json")
    info = copy.deepcopy(fixture("object_info.json"))
    info["FaceDiffuserKSampler"]["input"]["required"]["steps"][1]["max"] = 20
    limits = aq.with_pack_limits(aq.server_limits(graph, info, "http://gpu1:8188"))
    check_limits({"steps": 20, "cfg": 30.0, "seed": 2**64 - 1}, limits)
    with pytest.raises(
        InputError,
        match="steps 21 is out of range: FaceDiffuserKSampler.steps "
        "on server http://gpu1:8188 takes 1 to 20",
    ):
        check_limits({"steps": 21}, limits)
    # a server without the pack gives no range for its inputs: the pack's own applies,
    # named after the pack node's input, and the pack's size ranges for the stock nodes
    offline = aq.with_pack_limits(aq.server_limits(graph, {}, "http://bare:8188"))
    assert [lim for lim in offline if lim.node_id] == aq.pack_limits()
    assert {lim.setting for lim in offline} == {
        "seed", "steps", "cfg", "scene_end", "fusion_end", "width", "height", "batch_size",
    }  # fmt: skip
    with pytest.raises(
        InputError,
        match=r"cfg 30.5 is out of range: .* \(no server gave its range\) takes 0 to 30",
    ):
        check_limits({"cfg": 30.5}, offline)
    with pytest.raises(InputError, match="seed -1 .* takes 0 to 2\\^64-1"):
        check_limits({"seed": -1}, offline)
    with pytest.raises(InputError, match="width 16392 is out of range: Face-diffuser takes 16"):
        check_limits({"width": 16392}, offline)
    # the guider graph: the stock nodes' ranges come from the server too
    stock = aq.server_limits(api("facediffuser_guider_advanced.json"), info, "http://gpu1:8188")
    assert {(lim.node_id, lim.input) for lim in stock} >= {
        ("RandomNoise", "noise_seed"),
        ("BasicScheduler", "steps"),
        ("FaceDiffuserSNFGuider", "cfg"),
    }


@pytest.mark.parametrize(
    "given, problem",
    [
        ("htp:/x", "'htp:' is not http:// or https://"),
        ("ftp://x", "scheme 'ftp'"),
        ("http://host:99999", "is not a ComfyUI address"),
        ("", "is not a ComfyUI address"),
        ("http://", "is not a ComfyUI address"),
        ("gpu 1:8188", "is not a ComfyUI address"),
        ("http://gpu1:8188/?x=1", "is not a ComfyUI address"),
    ],
)
def test_a_malformed_server_address_is_named_with_the_fix(given, problem):
    with pytest.raises(aq.QueueError, match="give http://HOST:PORT") as caught:
        aq.server_url(given)
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_server_addresses_that_are_fine():
    assert aq.server_url("gpu1:8188") == "http://gpu1:8188"
    assert aq.server_url("localhost:8188/") == "http://localhost:8188"
    assert aq.server_url(" https://host/comfy ") == "https://host/comfy"
    assert aq.server_url("[::1]:8188") == "http://[::1]:8188"


# =========================================================================== against the fake


def test_one_item_end_to_end(tmp_path, fake, refs):
    lines: list[str] = []
    result = aq.run_queue(items(1, refs), options(tmp_path, [fake]), log=lines.append)
    assert result.done == ["item00"] and result.exit_code == 0
    ((prompt_id, graph),) = fake.received
    uploaded = sorted(fake.uploads)
    assert len(uploaded) == 2 and all(n.startswith("fdq_") for n in uploaded)
    sha = batch_manifest.FileDigests()
    assert [graph["3"]["inputs"]["image"], graph["4"]["inputs"]["image"]] == [
        aq.upload_name(refs[0], sha(refs[0])),
        aq.upload_name(refs[1], sha(refs[1])),
    ]
    assert fake.uploads[graph["3"]["inputs"]["image"]] == refs[0].read_bytes()
    assert (
        graph["10"]["inputs"]["prompt"].endswith("scene 0") and graph["20"]["inputs"]["seed"] == 0
    )
    record = entry(tmp_path, "item00")
    assert record["status"] == "done" and record["prompt_id"] == prompt_id
    assert record["server"] == fake.url and record["seed"] == 0 and record["attempts"] == 1
    assert record["texts"] == {"32": ["image 1: person 1: 0.00"]}
    assert set(record["timings"]) == {"submit_s", "wait_s", "execution_s", "download_s"}
    (image,) = record["outputs"]  # the SaveImage only: PreviewImage files stay on the server
    assert image.startswith(f"item00-{record['digest'][:12]}/")
    assert (tmp_path / "out" / image).read_bytes() == fake.png
    assert any(line.startswith("done    item00") for line in lines)
    run = manifest(tmp_path)["runs"][-1]
    assert run["executor"] == "comfyui" and run["servers"] == [fake.url]


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
    records = {r["id"]: r for r in manifest(tmp_path)["entries"].values()}
    queued = [k for k, r in records.items() if r["status"] == "submitted"]
    assert queued, records  # depth 2: one was still on the server when we stopped
    fake.exec_time = 0.02
    second = aq.run_queue(batch, options(tmp_path, [fake]))
    assert second.skipped == first.done and second.exit_code == 0
    assert sorted(first.done + second.done) == [b.key for b in batch]
    assert sorted(submitted_keys([fake])) == [0, 1, 2, 3]  # nothing queued twice
    for key in queued:  # collected from the server, same prompt id as before
        assert entry(tmp_path, key)["prompt_id"] == records[key]["prompt_id"]


def test_changed_inputs_run_again_and_keep_the_first_runs_record(tmp_path, fake, refs):
    aq.run_queue(items(2, refs), options(tmp_path, [fake]))
    first = entry(tmp_path, "item01")
    changed = items(2, refs)
    changed[1].settings["cfg"] = 2.0
    changed[1].settings["prompt"] = "a man <|image|> and a woman <|image|> elsewhere"
    lines = []
    result = aq.run_queue(changed, options(tmp_path, [fake]), log=lines.append)
    assert result.skipped == ["item00"] and result.done == ["item01"]
    assert fake.received[-1][1]["20"]["inputs"]["cfg"] == 2.0
    assert any("item item01: its inputs changed" in line for line in lines)
    entries = [r for r in manifest(tmp_path)["entries"].values() if r["id"] == "item01"]
    assert len(entries) == 2  # the first run's record is kept beside the new one
    kept = next(r for r in entries if r["digest"] == first["digest"])
    assert kept == first and kept["inputs"]["prompt"].endswith("scene 1")
    new = next(r for r in entries if r["digest"] != first["digest"])
    assert new["status"] == "done" and new["inputs"]["cfg"] == 2.0
    for record in entries:  # and both runs' images
        assert (tmp_path / "out" / record["outputs"][0]).is_file()
    assert first["outputs"] != new["outputs"]


def test_a_manifest_of_the_earlier_format_is_read_and_resumed(tmp_path, fake, refs):
    aq.run_queue(items(1, refs), options(tmp_path, [fake]))
    record = entry(tmp_path, "item00")
    old = {
        "format": "facediffuser-queue/1",
        "items": {"item00": {k: v for k, v in record.items() if k != "id"}, "bad": {}},
        "runs": [{"started": "then"}],
    }
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(old))
    result = aq.run_queue(items(1, refs), options(tmp_path, [fake]))
    assert result.skipped == ["item00"] and len(fake.received) == 1
    data = manifest(tmp_path)
    assert data["format"] == "facediffuser-batch/1" and data["runs"][0] == {"started": "then"}


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
    assert any("reachable again" in line for line in lines)


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
    assert entry(tmp_path, "item00")["attempts"] == 2
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
        a.kill()  # gone for good

    threading.Thread(target=kill_a, daemon=True).start()
    result = aq.run_queue(items(4, refs), options(tmp_path, [a, b], retries=2), log=lines.append)
    assert sorted(result.done) == [f"item{i:02d}" for i in range(4)]
    assert any(f"server {a.url}: giving up after 2 retries" in line for line in lines)
    assert manifest(tmp_path)["servers"][a.url]["unreachable"]
    a.revive()  # for the fixture's close()


def test_node_errors_fail_the_item_readably_and_the_batch_goes_on(tmp_path, fake, refs):
    batch = items(3, refs)
    batch[1].settings["prompt"] = "a man <|image|> and a woman <|image|> REJECT"
    lines = []
    result = aq.run_queue(batch, options(tmp_path, [fake]), log=lines.append)
    assert result.failed == ["item01"] and sorted(result.done) == ["item00", "item02"]
    assert result.exit_code == 1
    error = entry(tmp_path, "item01")["error"]
    assert error.startswith("rejected by ComfyUI: node 10 'Face-diffuser Subject Encode': ")
    assert "the test server refuses this prompt" in error


def test_execution_error_in_history_fails_the_item_readably(tmp_path, fake, refs):
    batch = items(2, refs)
    batch[0].settings["prompt"] = "a man <|image|> and a woman <|image|> FAIL"
    result = aq.run_queue(batch, options(tmp_path, [fake]))
    assert result.failed == ["item00"] and result.done == ["item01"]
    error = entry(tmp_path, "item00")["error"]
    assert error.startswith("node 10 'Face-diffuser Subject Encode' (FaceDiffuserSubjectEncode)")


def test_a_failed_item_runs_again_in_the_same_entry(tmp_path, fake, refs):
    fake.missing_models = {"SDM/pytorch_model.bin"}
    assert aq.run_queue(items(1, refs), options(tmp_path, [fake])).failed == ["item00"]
    fake.missing_models = set()
    assert aq.run_queue(items(1, refs), options(tmp_path, [fake])).done == ["item00"]
    assert entry(tmp_path, "item00")["status"] == "done"  # one entry: same inputs


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
    error = entry(tmp_path, "item01")["error"]
    assert "no server" in error and "SDM/pytorch_model.bin" in error


def test_a_missing_node_type_sends_the_items_elsewhere(tmp_path, two_fakes, refs):
    bare, full = two_fakes
    bare.object_info = {k: v for k, v in bare.object_info.items() if k != "FaceDiffuserKSampler"}
    lines = []
    result = aq.run_queue(items(2, refs), options(tmp_path, [bare, full]), log=lines.append)
    assert len(result.done) == 2 and not bare.received
    assert any("needs node type FaceDiffuserKSampler" in line for line in lines)


def test_a_crashing_slot_does_not_hang_the_batch(tmp_path, fake, refs, monkeypatch):
    def broken(self, job, record):
        raise RuntimeError("bug")

    monkeypatch.setattr(queue_slot.Slot, "collect", broken)
    result = aq.run_queue(items(2, refs), options(tmp_path, [fake]))
    assert sorted(result.failed) == ["item00", "item01"]
    assert "internal error RuntimeError: bug" in entry(tmp_path, "item01")["error"]


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
    assert "no result within" in entry(tmp_path, "item00")["error"]
    prompt_id = fake.received[0][0]
    assert prompt_id in fake.deleted and prompt_id in fake.interrupts


def test_websocket_step_progress_and_polling_fallback(tmp_path, fake, refs, monkeypatch):
    fake.exec_time = 0.3
    seen = []
    original = queue_server.Server.on_event

    def spy(self, kind, data):
        original(self, kind, data)
        seen.extend(self.progress.values())

    monkeypatch.setattr(queue_server.Server, "on_event", spy)
    aq.run_queue(items(1, refs), options(tmp_path, [fake]))
    assert (8, 8) in seen and (1, 8) in seen  # the recorded run's 8 steps
    result = aq.run_queue(items(1, refs), options(tmp_path / "poll", [fake], websocket=False))
    assert result.done == ["item00"]
    assert manifest(tmp_path / "poll")["servers"][fake.url]["websocket"] is False


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
    assert manifest(tmp_path)["runs"][-1]["invalid"]["item01"] == (
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
    error = manifest(tmp_path)["runs"][-1]["invalid"]["item00"]
    assert f"FaceDiffuserKSampler.cfg on server {default.url} takes 0 to 30" in error


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


def test_cli_user_errors_exit_2_before_any_server_is_asked(tmp_path, fake, refs, capsys):
    out = ["--out", str(tmp_path / "o"), "--no-progress"]
    assert main(["queue", "-s", fake.url, "--prompt", "no marker here", "-r", "x.png", *out]) == 2
    assert "reference image 'x.png' not found" in capsys.readouterr().err
    assert main(["queue", "-s", fake.url, "-p", "no marker here", "-r", str(refs[0]), *out]) == 2
    assert "has no <|image|> marker" in capsys.readouterr().err
    assert main(["queue", "-s", "ftp://x", *out]) == 2
    assert "is not a ComfyUI address" in capsys.readouterr().err
    assert main(["queue", "-s", "htp:/x", "-p", "a man <|image|>", *out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'htp:' is not http:// or https://" in err
    assert "DNS" not in err and "Name or service" not in err
    assert main(["queue", str(tmp_path / "none.json"), "-s", fake.url, *out]) == 2
    assert "does not exist" in capsys.readouterr().err
    # an option out of the pack's range is refused at once, alone or as a batch's default
    batch = tmp_path / "rows.csv"
    batch.write_text('prompt,seed\n"a man <|image|> at sea",1\n', encoding="utf-8")
    for given in (["-p", "a man <|image|> at sea"], ["-b", str(batch)]):
        assert main(["queue", "-s", fake.url, *given, "--cfg", "31", *out]) == 2
        err = capsys.readouterr().err
        assert "--cfg 31 is out of range: Face-diffuser takes 0 to 30" in err
    assert not (tmp_path / "o").exists()
    assert not fake.received and not fake.info_requests and not fake.uploads


def test_the_shipped_graph_is_never_run_with_its_own_example_job(tmp_path, fake, refs, capsys):
    """No prompt, people or batch: refused before any server is asked, not the shipped
    graph's own 512x512 50-step job; a row without them is refused too."""
    out = ["--out", str(tmp_path / "o"), "--no-progress", "-s", fake.url]
    assert main(["queue", *out]) == 2
    err = capsys.readouterr().err
    assert "no -p/--prompt and no -r/--ref: the shipped workflows need a prompt" in err
    assert main(["queue", "-p", "a man <|image|> rowing", *out]) == 2
    assert "no -r/--ref" in capsys.readouterr().err
    assert not fake.received and not fake.info_requests
    batch = tmp_path / "b.csv"
    batch.write_text("id,prompt,seed\nx,,1\ny,a man <|image|> rowing,2\n")
    assert main(["queue", "-b", str(batch), *out]) == 1
    printed = capsys.readouterr().out
    assert "invalid x  line 2: no prompt and no references: the shipped" in printed
    assert "invalid y  line 3: no references" in printed
    assert not fake.received
    # a workflow file of one's own runs as it is: that is an explicit choice
    workflow = tmp_path / "mine.json"
    workflow.write_text(json.dumps(api("facediffuser_one_person.json")))
    assert main(["queue", str(workflow), "--steps", "3", "--poll", "0.02", *out]) == 0
    ((_, graph),) = fake.received
    assert graph["20"]["inputs"]["steps"] == 3


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
    (record,) = json.loads((out / "manifest.json").read_text())["entries"].values()
    assert record["id"] == "0001" and record["status"] == "interrupted"
    assert record["prompt_id"] == prompt_id


# =========================================================================== several photos


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
    sha = batch_manifest.FileDigests()
    name = {p: aq.upload_name(p, sha(p)) for p in refs}
    assert loads == sorted([name[him], name[her], name[her]])
    assert len(fake.uploads) == 2  # her.png is uploaded once and used twice
    # a different grouping of the same photos is a different item
    first = entry(tmp_path, "item00")
    regrouped = items(1, refs, references=[str(him), [str(her), str(her)]])
    again = aq.run_queue(regrouped, options(tmp_path, [fake]))
    assert again.done == ["item00"]
    digests = {r["digest"] for r in manifest(tmp_path)["entries"].values()}
    assert len(digests) == 2 and first["digest"] in digests
