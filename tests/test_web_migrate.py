"""The frontend extension's migration (web/migrate.js) on every saved-workflow fixture.

Each released version's UI workflows, as shipped and as saved by the real frontends of
ComfyUI 0.3.48, 0.8.0 and 0.12.1 (tests/fixtures/workflows, dev/make_workflow_fixtures.py),
are upgraded by the extension's own code, run in node, for both kinds of host (dynamic
inputs: 0.8.0+; fixed sockets: 0.3.48). Every value and person link must then mean what the
release's API twin says by name. Skipped where no ``node`` is installed (the browser suite
runs the same code in the real frontend).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "workflows"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

LIST_HOST = {"dynamicMode": True, "peopleList": True}  # ComfyUI 0.8.0+
FIXED_HOST = {"dynamicMode": False, "peopleList": False}  # ComfyUI 0.3.48
SNF, PEOPLE = (
    "FaceDiffuserSNFSettings",
    ("FaceDiffuserSubjectEncode", "FaceDiffuserIdentitySimilarity"),
)
RUNNER = """
import { migrateGraph } from %s;
let text = "";
process.stdin.on("data", (d) => (text += d));
process.stdin.on("end", () => {
  const jobs = JSON.parse(text);
  const out = jobs.map(({ graph, host }) => ({ changes: migrateGraph(graph, host), graph }));
  process.stdout.write(JSON.stringify(out));
});
"""


def migrate(*jobs: tuple[dict, dict]) -> list[dict]:
    """[(graph, host)] -> [{"graph": upgraded, "changes": [...]}], in one node process."""
    url = json.dumps((ROOT / "web" / "migrate.js").as_uri())
    proc = subprocess.run(
        [NODE, "--input-type=module", "-e", RUNNER % url],
        input=json.dumps([{"graph": g, "host": h} for g, h in jobs]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


def fixtures() -> list[tuple[str, str, Path]]:
    index = json.loads((FIXTURES / "index.json").read_text())
    found = []
    for release, entry in index.items():
        for variant in ["shipped", *entry["saved_on"]]:
            for path in sorted((FIXTURES / release / variant).glob("*.json")):
                found.append((release, variant, path))
    return found


def snf_values(node: dict, host: dict) -> dict:
    """mode, kernel_size, temperature of an upgraded SNF Settings node, by this host's layout."""
    values = node["widgets_values"]
    if not host["dynamicMode"]:
        return dict(zip(["mode", "kernel_size", "temperature"], values, strict=True))
    if values[0] == "soft":
        return dict(zip(["mode", "temperature", "kernel_size"], values, strict=True))
    mode, kernel = values
    temperature = node["properties"].get("facediffuser.temperature")
    return {"mode": mode, "kernel_size": kernel, "temperature": temperature}


def link_table(graph: dict) -> dict:
    table = {}
    for link in graph["links"]:
        if isinstance(link, list):
            table[link[0]] = {"origin": link[1], "slot": link[2], "target": link[3], "to": link[4]}
        else:
            table[link["id"]] = {
                "origin": link["origin_id"],
                "slot": link["origin_slot"],
                "target": link["target_id"],
                "to": link["target_slot"],
            }
    return table


def person_links(node: dict, links: dict) -> dict:
    """person_N -> [origin node id, output slot] over the node's connected person sockets."""
    found = {}
    for slot, spec in enumerate(node["inputs"]):
        if spec["name"].split(".")[-1].startswith("person_") and spec.get("link") is not None:
            link = links[spec["link"]]
            assert link["target"] == node["id"] and link["to"] == slot, (node["id"], spec)
            found[spec["name"].split(".")[-1]] = [str(link["origin"]), link["slot"]]
    return found


def api_people(inputs: dict) -> dict:
    return {
        k.split(".")[-1]: v for k, v in inputs.items() if k.split(".")[-1].startswith("person_")
    }


CASES = fixtures()


@pytest.mark.parametrize(
    "release,variant,path", CASES, ids=[f"{r}/{v}/{p.stem}" for r, v, p in CASES]
)
def test_every_saved_workflow_keeps_its_meaning_on_both_kinds_of_host(release, variant, path):
    api = json.loads((FIXTURES / release / "api" / path.name).read_text())
    saved = json.loads(path.read_text())
    for result, host in zip(
        migrate((saved, LIST_HOST), (saved, FIXED_HOST)), (LIST_HOST, FIXED_HOST), strict=True
    ):
        graph, links = result["graph"], link_table(result["graph"])
        for node in graph["nodes"]:
            expected = api[str(node["id"])]["inputs"]
            if node["type"] == SNF:
                got = snf_values(node, host)
                want = {k: expected.get(k, expected.get(f"mode.{k}")) for k in got}
                if want["temperature"] is None:  # a hard-mode API twin without temperature
                    want["temperature"] = got["temperature"] if host["dynamicMode"] else 1.0
                assert got == want, (path, host, node["widgets_values"])
            if node["type"] in PEOPLE:
                assert person_links(node, links) == api_people(expected), (path, host)
                names = [i["name"] for i in node["inputs"] if "person_" in i["name"]]
                assert len(names) == len(set(names)), names  # no duplicate socket
                if host["peopleList"]:
                    assert all(n.startswith("people.") for n in names), names
                    labels = [i.get("label") for i in node["inputs"] if "person_" in i["name"]]
                    assert labels == [n.split(".")[1] for n in names]
                    assert all(
                        i.get("link") is not None for i in node["inputs"] if "person_" in i["name"]
                    )
                else:
                    assert not any(n.startswith("people.") for n in names), names


def test_migration_is_idempotent():
    jobs = [(json.loads(p.read_text()), h) for _, _, p in CASES for h in (LIST_HOST, FIXED_HOST)]
    once = migrate(*jobs)
    twice = migrate(*[(r["graph"], h) for r, (_, h) in zip(once, jobs, strict=True)])
    assert [r["graph"] for r in twice] == [r["graph"] for r in once]
    assert all(r["changes"] == [] for r in twice)


def _snf(values, inputs=None, properties=None) -> dict:
    node = {"id": 7, "type": SNF, "inputs": inputs or [], "widgets_values": values}
    node["properties"] = properties or {}
    return {"nodes": [node], "links": []}


def test_old_hard_mode_keeps_kernel_size_and_temperature():
    """The issue's case: 0.1's ["hard", T, K] loaded kernel_size T on a dynamic-mode host."""
    (dynamic,) = migrate((_snf(["hard", 0.7, 4]), LIST_HOST))
    node = dynamic["graph"]["nodes"][0]
    assert node["widgets_values"] == ["hard", 4]
    assert node["properties"]["facediffuser.temperature"] == 0.7
    (fixed,) = migrate((_snf(["hard", 0.7, 4]), FIXED_HOST))
    assert fixed["graph"]["nodes"][0]["widgets_values"] == ["hard", 4, 0.7]


def test_soft_mode_and_named_layouts():
    soft_v1, soft_named, kept = migrate(
        (_snf(["soft", 0.5, 3]), FIXED_HOST),
        # saved on 0.3.48 by the V3 pack: [mode, kernel_size, temperature], named
        (
            _snf(
                ["soft", 3, 0.5],
                [
                    {"name": n, "widget": {"name": n}, "link": None}
                    for n in ("mode", "kernel_size", "temperature")
                ],
            ),
            LIST_HOST,
        ),
        # hard on a dynamic host with the temperature kept: back in soft's place on 0.3.48
        (_snf(["hard", 3], properties={"facediffuser.temperature": 2.5}), FIXED_HOST),
    )
    assert soft_v1["graph"]["nodes"][0]["widgets_values"] == ["soft", 3, 0.5]
    assert soft_named["graph"]["nodes"][0]["widgets_values"] == ["soft", 0.5, 3]
    assert soft_named["graph"]["nodes"][0]["inputs"] == []  # the frontend lays widgets anew
    assert kept["graph"]["nodes"][0]["widgets_values"] == ["hard", 3, 2.5]


def test_links_follow_their_input_when_sockets_go():
    """Old empty person sockets removed: a linked input after them keeps its link."""
    node = {
        "id": 10,
        "type": PEOPLE[0],
        "inputs": [
            {"name": "clip", "link": 1},
            {"name": "person_1", "link": 2},
            {"name": "person_2", "link": None},
            {"name": "person_3", "link": None},
            {"name": "prompt", "widget": {"name": "prompt"}, "link": 3},
        ],
        "widgets_values": ["a man <|image|>", 512],
    }
    links = [[1, 1, 1, 10, 0, "CLIP"], [2, 3, 0, 10, 1, "IMAGE"], [3, 4, 0, 10, 4, "STRING"]]
    (result,) = migrate(({"nodes": [node], "links": links}, LIST_HOST))
    inputs = result["graph"]["nodes"][0]["inputs"]
    assert [i["name"] for i in inputs] == ["clip", "people.person_1", "prompt"]
    assert result["graph"]["links"][2][4] == 2  # the prompt's link moved with it
    assert inputs[1]["label"] == "person_1"


def test_unknown_layouts_are_left_alone():
    odd = _snf(["hard"])
    (result,) = migrate((odd, LIST_HOST))
    assert result["graph"] == odd and result["changes"] == []
