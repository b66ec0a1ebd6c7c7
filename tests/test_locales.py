"""The i18n files (locales/<lang>/) and help pages (web/docs/<NodeId>/<lang>.md) cover every node.

The node ids come from ``facediffuser_core/node_names.py`` (what the schemas use), the inputs
and outputs from a real ComfyUI's ``/object_info`` saved by dev/make_locales.py (one shape for
V1 and V3). The English strings must be exactly what dev/make_locales.py writes from that
fixture (generated, never edited by hand); each other language must translate every string
and every help page (a language is complete or absent; only English ships now).
The live server is checked in tests/integration/test_comfyui_registry.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OBJECT_INFO = json.loads((ROOT / "tests/fixtures/comfyui/object_info_pack.json").read_text())
LANGS = sorted(p.name for p in (ROOT / "locales").iterdir() if p.is_dir())

# inputs nested in V3 dynamic inputs, also named on their own (see dev/make_locales.py)
LIST_SOCKETS = {"people", "temperature", *(f"person_{i}" for i in range(1, 5))}


def _generator():
    spec = importlib.util.spec_from_file_location("make_locales", ROOT / "dev/make_locales.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def node_ids_in_source() -> set[str]:
    """Node ids the pack registers: its schemas take them from facediffuser_core.node_names
    (tests/test_nodes_offline.py checks that the loaded nodes have exactly these)."""
    from facediffuser_core.node_names import NODE_IDS

    return set(NODE_IDS)


def _load(lang: str, name: str) -> dict:
    return json.loads((ROOT / "locales" / lang / name).read_text(encoding="utf-8"))


def test_every_node_is_in_the_fixture():
    ids = node_ids_in_source()
    assert len(ids) == 10, sorted(ids)
    assert ids == {k for k in OBJECT_INFO if k.startswith("FaceDiffuser")}


def test_english_is_generated_from_the_node_definitions():
    generated = _generator().node_defs(OBJECT_INFO)
    assert _load("en", "nodeDefs.json") == generated, "run python dev/make_locales.py"


@pytest.mark.parametrize("lang", LANGS)
def test_each_locale_lists_every_node_input_and_output(lang):
    assert "en" in LANGS
    defs = _load(lang, "nodeDefs.json")
    assert set(defs) == node_ids_in_source()
    for node_id, entry in defs.items():
        info = OBJECT_INFO[node_id]
        assert entry["display_name"] and entry.get("description"), node_id
        inputs = [n for part in ("required", "optional") for n in info["input"].get(part, {})]
        # every input, plus the inputs nested in dynamic ones by name (0.3.48's plain inputs)
        assert set(inputs) <= set(entry["inputs"]), node_id
        assert set(entry["inputs"]) - set(inputs) <= LIST_SOCKETS, node_id
        assert sorted(entry["outputs"], key=int) == [str(i) for i in range(len(info["output"]))]
        for name in inputs:  # every input the node documents has its tooltip here
            spec = info["input"].get("required", {}).get(name) or info["input"]["optional"][name]
            if len(spec) > 1 and spec[1].get("tooltip"):
                assert entry["inputs"][name].get("tooltip"), (lang, node_id, name)
    main = _load(lang, "main.json")
    assert "Face-diffuser" in main["nodeCategories"]


def test_other_languages_translate_every_string():
    generator = _generator()
    english = generator.node_defs(OBJECT_INFO)
    for lang in [lang for lang in LANGS if lang != "en"]:
        memory = json.loads((ROOT / "dev/translations" / f"{lang}.json").read_text("utf-8"))
        missing: set[str] = set()
        assert _load(lang, "nodeDefs.json") == generator.translate(english, memory, missing)
        assert not missing, f"{lang}: untranslated {sorted(missing)[:3]}"
        for node_id in node_ids_in_source():
            assert (ROOT / "web" / "docs" / node_id / f"{lang}.md").is_file(), (lang, node_id)


def test_help_pages_are_where_the_frontend_asks_first():
    """docs/<NodeId>/<locale>.md for each shipped language, docs/<NodeId>.md (a copy of the
    English page) for the others: no 404 before a page of a shipped language."""
    for node_id in node_ids_in_source():
        english = ROOT / "web" / "docs" / node_id / "en.md"
        fallback = ROOT / "web" / "docs" / f"{node_id}.md"
        assert fallback.read_text(encoding="utf-8") == english.read_text(encoding="utf-8"), (
            "run python dev/make_locales.py"
        )
    shipped = {p.name for p in (ROOT / "web" / "docs").iterdir() if p.is_dir()}
    assert shipped == node_ids_in_source()
    languages = {
        p.stem for d in (ROOT / "web" / "docs").iterdir() if d.is_dir() for p in d.glob("*.md")
    }
    assert languages == set(LANGS), "a help page language without its locale, or the reverse"


@pytest.mark.parametrize("node_id", sorted(node_ids_in_source()))
def test_every_node_has_a_help_page(node_id):
    page = ROOT / "web" / "docs" / node_id / "en.md"
    assert page.is_file(), page
    text = page.read_text(encoding="utf-8")
    for section in ("## Inputs", "## Outputs", "## Errors", "## Example"):
        assert section in text, (node_id, section)
    info = OBJECT_INFO[node_id]
    names = [n for part in ("required", "optional") for n in info["input"].get(part, {})]
    names += list(info.get("output_name") or [])
    for name in names:
        if re.fullmatch(r"person_[2-4]", name):
            continue  # the growing people list is described once
        assert f"`{name}`" in text, (node_id, name)
