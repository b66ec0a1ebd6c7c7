"""The pack's i18n files for ComfyUI, generated from the node definitions.

    python dev/make_locales.py                        # from the object_info test fixture
    python dev/make_locales.py http://127.0.0.1:8188   # from a running ComfyUI with the pack

ComfyUI serves ``locales/<lang>/main.json`` and ``nodeDefs.json`` of every pack at ``/i18n``
(``app/custom_node_manager.py``); the frontend merges them into its own strings and shows
them as node titles, descriptions and slot tooltips. The English file is written from
``/object_info`` (what the nodes themselves declare, V1 or V3 alike), never by hand; the
other languages use ``dev/translations/<lang>.json``, a memory from English text to the
translation, so a changed English string shows up as untranslated (listed when this runs)
instead of keeping a stale translation. A language ships complete or not at all: node and
input names, tooltips and the help pages (web/docs/<NodeId>/<lang>.md) together; none but
English does now (docs/compatibility.md says why).

It also writes ``web/docs/<NodeId>.md``, a copy of the English help page: the frontend asks
for ``docs/<NodeId>/<locale>.md`` first and falls back to ``docs/<NodeId>.md`` for the
locales the pack does not have. Development only (kept out of the published pack).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facediffuser_core.node_names import PACK_PREFIX  # noqa: E402

# the pack's nodes as a real ComfyUI served them, saved whenever this runs against a server
FIXTURE = ROOT / "tests" / "fixtures" / "comfyui" / "object_info_pack.json"
LOCALES = ROOT / "locales"
TRANSLATIONS = ROOT / "dev" / "translations"
HELP = ROOT / "web" / "docs"
CATEGORY = "Face-diffuser"


def read_object_info(source: str | None) -> dict:
    if source and source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source.rstrip("/") + "/object_info", timeout=60) as reply:
            return json.load(reply)
    return json.loads(Path(source or FIXTURE).read_text())


def pack_nodes(object_info: dict) -> dict:
    return {k: v for k, v in sorted(object_info.items()) if k.startswith(PACK_PREFIX)}


def _nested_inputs(options: dict) -> dict:
    """Inputs nested in a V3 dynamic input, by their own names: a growing list's sockets
    (``person_1`` ...) and a dynamic combo's option inputs (``temperature``). They are the
    names those items show, and the plain inputs a host without V3 dynamic inputs
    (ComfyUI 0.3.48) has instead."""
    found = {}
    for option in options.get("options") or []:
        if not isinstance(option, dict):
            continue
        for part in ("required", "optional"):
            for name, spec in ((option.get("inputs") or {}).get(part) or {}).items():
                tip = spec[1].get("tooltip") if len(spec) > 1 else None
                found[name] = {"name": name, **({"tooltip": tip} if tip else {})}
    return {**found, **_list_sockets(options)}


def _list_sockets(options: dict) -> dict:
    template = options.get("template") or {}
    specs = [
        spec
        for part in ("required", "optional")
        for spec in ((template.get("input") or {}).get(part) or {}).values()
    ]
    if not specs or not template.get("names"):
        return {}
    tip = specs[0][1].get("tooltip") if len(specs[0]) > 1 else None
    return {n: {"name": n, **({"tooltip": tip} if tip else {})} for n in template["names"]}


def node_defs(object_info: dict) -> dict:
    """The frontend's nodeDefs shape: display_name, description, inputs{}, outputs{"0": }."""
    defs = {}
    for node_id, info in pack_nodes(object_info).items():
        entry: dict = {"display_name": info.get("display_name") or node_id}
        if info.get("description"):
            entry["description"] = info["description"]
        inputs = {}
        for part in ("required", "optional"):
            for name, spec in info["input"].get(part, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                inputs[name] = {"name": name}
                if options.get("tooltip"):
                    inputs[name]["tooltip"] = options["tooltip"]
                inputs.update(_nested_inputs(options))
        entry["inputs"] = inputs
        names = info.get("output_name") or info["output"]
        tips = info.get("output_tooltips") or []
        outputs = {}
        for slot, name in enumerate(names):
            outputs[str(slot)] = {"name": name}
            if slot < len(tips) and tips[slot]:
                outputs[str(slot)]["tooltip"] = tips[slot]
        entry["outputs"] = outputs
        defs[node_id] = entry
    return defs


def translate(defs: dict, memory: dict[str, str], missing: set[str]) -> dict:
    def tr(text: str) -> str:
        if text in memory:
            return memory[text]
        missing.add(text)
        return text

    out = {}
    for node_id, entry in defs.items():
        new = {"display_name": tr(entry["display_name"])}
        if "description" in entry:
            new["description"] = tr(entry["description"])
        for key in ("inputs", "outputs"):
            new[key] = {}
            for slot, item in entry[key].items():
                new[key][slot] = {"name": item["name"]}  # socket names stay as in the graphs
                if "tooltip" in item:
                    new[key][slot]["tooltip"] = tr(item["tooltip"])
        out[node_id] = new
    return out


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


def write_help_fallbacks() -> None:
    """web/docs/<NodeId>.md = web/docs/<NodeId>/en.md, for the locales without a page."""
    for page in sorted(HELP.glob("*/en.md")):
        fallback = HELP / f"{page.parent.name}.md"
        fallback.write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
        print(f"wrote {fallback.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    source = argv[1] if len(argv) > 1 else None
    info = pack_nodes(read_object_info(source))
    if source and source.startswith(("http://", "https://")):
        write(FIXTURE, info)
    defs = node_defs(info)
    write(LOCALES / "en" / "nodeDefs.json", defs)
    write(LOCALES / "en" / "main.json", {"nodeCategories": {CATEGORY: CATEGORY}})
    write_help_fallbacks()
    status = 0
    for memory_file in sorted(TRANSLATIONS.glob("*.json")):
        lang = memory_file.stem
        memory = json.loads(memory_file.read_text(encoding="utf-8"))
        missing: set[str] = set()
        write(LOCALES / lang / "nodeDefs.json", translate(defs, memory, missing))
        category = memory.get(CATEGORY, CATEGORY)
        write(LOCALES / lang / "main.json", {"nodeCategories": {CATEGORY: category}})
        for text in sorted(missing):
            print(f"  {lang}: untranslated (English kept): {text!r}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
