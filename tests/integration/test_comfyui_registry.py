"""Issue 11 in a real ComfyUI: where its frontend finds the pack's help, strings and examples.

Each node's help page at the URL the frontend's help panel asks for, the locale strings at
/i18n, the workflow templates with their thumbnails, and the subgraph blueprint, all over
HTTP from a started server (fixtures in conftest.py, helpers in _host.py). Skipped with the
reason printed where no ComfyUI is given.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from _host import AVAILABLE, ROOT, SKIP_REASON, object_info

if not AVAILABLE:
    pytest.skip(SKIP_REASON, allow_module_level=True)

# inputs nested in V3 dynamic inputs, also named on their own (see dev/make_locales.py)
LIST_SOCKETS = {"people", "temperature", *(f"person_{i}" for i in range(1, 5))}


def _get(server, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(server["url"] + path, timeout=60) as reply:
            return reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""


@pytest.fixture(scope="module")
def pack_nodes(server):
    nodes = {k: v for k, v in object_info(server).items() if k.startswith("FaceDiffuser")}
    assert len(nodes) == 10, sorted(nodes)
    return nodes


def _pack_folder(info: dict) -> str:
    """The frontend's extractCustomNodeName: custom_nodes.<folder>[@version]."""
    parts = info["python_module"].split(".")
    assert parts[0] == "custom_nodes", info["python_module"]
    return parts[1].split("@")[0]


def test_each_node_help_page_is_served_where_the_help_panel_looks(server, pack_nodes):
    for node_id, info in pack_nodes.items():
        folder = urllib.parse.quote(_pack_folder(info))
        # the frontend tries docs/<id>/<lang>.md first, then docs/<id>.md (other locales)
        for page in (f"{node_id}/en.md", f"{node_id}.md"):
            status, body, _ = _get(server, f"/extensions/{folder}/docs/{page}")
            assert status == 200, (page, status)
            text = body.decode("utf-8")
            assert text == (ROOT / "web" / "docs" / node_id / "en.md").read_text(encoding="utf-8")
            assert "## Inputs" in text and "## Errors" in text
    # the help folder holds no script: /extensions lists nothing of ours to load in the page
    status, body, _ = _get(server, "/extensions")
    assert status == 200 and not [u for u in json.loads(body) if "/docs/" in u]


def test_locale_strings_are_served_at_i18n(server, pack_nodes):
    status, body, _ = _get(server, "/i18n")
    assert status == 200
    translations = json.loads(body)
    for lang in ("en",):
        defs = translations[lang]["nodeDefs"]
        assert "Face-diffuser" in translations[lang]["nodeCategories"]
        for node_id, info in pack_nodes.items():
            entry = defs[node_id]
            inputs = [n for part in ("required", "optional") for n in info["input"].get(part, {})]
            # this host's inputs, plus the inputs nested in dynamic ones by name (either host's)
            assert set(inputs) <= set(entry["inputs"]), (lang, node_id)
            assert set(entry["inputs"]) - set(inputs) <= LIST_SOCKETS, (lang, node_id)
            assert len(entry["outputs"]) == len(info["output"]), (lang, node_id)
    assert (
        translations["en"]["nodeDefs"]["FaceDiffuserKSampler"]["display_name"]
        == (pack_nodes["FaceDiffuserKSampler"]["display_name"])
    )
    # no language but English: a half-translated UI is worse than an English one
    assert all(
        "FaceDiffuserLoadSDM" not in strings.get("nodeDefs", {})
        for lang, strings in translations.items()
        if lang != "en"
    )


def test_templates_are_listed_with_their_thumbnails(server, pack_nodes):
    folder = _pack_folder(next(iter(pack_nodes.values())))
    status, body, _ = _get(server, "/workflow_templates")
    assert status == 200
    listed = sorted(json.loads(body)[folder])
    assert listed == sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    for name in listed:  # the URLs the frontend's template browser uses
        status, body, kind = _get(server, f"/api/workflow_templates/{folder}/{name}.jpg")
        assert status == 200 and body[:3] == b"\xff\xd8\xff", (name, status)
        assert kind.startswith("image/jpeg"), kind
        status, body, _ = _get(server, f"/api/workflow_templates/{folder}/{name}.json")
        graph = json.loads(body)
        ours = [n for n in graph["nodes"] if n["type"].startswith("FaceDiffuser")]
        assert ours and all(n["properties"]["cnr_id"] == "facediffuser" for n in ours)


def test_the_blueprint_is_listed_and_served(server, pack_nodes):
    folder = _pack_folder(next(iter(pack_nodes.values())))
    status, body, _ = _get(server, "/global_subgraphs")
    if status == 404:
        pytest.skip("this ComfyUI has no subgraph blueprints (added in 0.3.67)")
    entries = {k: v for k, v in json.loads(body).items() if v["info"]["node_pack"].endswith(folder)}
    assert [e["name"] for e in entries.values()] == ["Face-diffuser person"]
    (blueprint_id,) = entries
    status, body, _ = _get(server, f"/global_subgraphs/{blueprint_id}")
    assert status == 200
    graph = json.loads(json.loads(body)["data"])
    (subgraph,) = graph["definitions"]["subgraphs"]
    assert graph["nodes"][0]["type"] == subgraph["id"]
    for node in subgraph["nodes"]:  # every node of the blueprint exists in this ComfyUI
        assert node["type"] in object_info(server), node["type"]
