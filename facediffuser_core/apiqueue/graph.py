"""Workflow graphs: loading, UI -> API conversion, telling a server's missing pieces apart.

Pure data: a graph is ComfyUI's API format (``{node_id: {"class_type", "inputs"}}``) and
nodes are found by class, never by id. Nothing here talks to a server; ``object_info``
(a server's node definitions) is passed in.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..catalog import FACE_FOLDER, HF_REPO, MODEL_FOLDER, PUBLISHED_MODELS
from ..node_names import (
    CFG,
    FACE_ANALYSIS_LOADER,
    FACE_PACK,
    FUSION_END,
    KSAMPLER,
    LOADERS,
    MODEL_NAME,
    PROMPT,
    SCENE_END,
    SEED,
    SNF_GUIDER,
    STEPS,
    SUBJECT_ENCODE,
)
from .dynamic import (
    AUTOGROW,
    DYNAMIC_COMBO,
    autogrow_slots,
    option_specs,
    people_by_plain_names,
)
from .errors import QueueError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}

# stock ComfyUI nodes the queue writes into (the pack's own: facediffuser_core.node_names)
LOAD_IMAGE = "LoadImage"
CLIP_TEXT_ENCODE = "CLIPTextEncode"
EMPTY_LATENT = "EmptyLatentImage"
RANDOM_NOISE = "RandomNoise"
BASIC_SCHEDULER = "BasicScheduler"

# what each setting means, as (node class, input) pairs
TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "prompt": ((SUBJECT_ENCODE, PROMPT),),
    "seed": ((KSAMPLER, SEED), (RANDOM_NOISE, "noise_seed")),
    "steps": ((KSAMPLER, STEPS), (BASIC_SCHEDULER, "steps")),
    "cfg": ((KSAMPLER, CFG), (SNF_GUIDER, CFG)),
    "scene_end": ((KSAMPLER, SCENE_END), (SNF_GUIDER, SCENE_END)),
    "fusion_end": ((KSAMPLER, FUSION_END), (SNF_GUIDER, FUSION_END)),
    "width": ((EMPTY_LATENT, "width"),),
    "height": ((EMPTY_LATENT, "height"),),
    "batch_size": ((EMPTY_LATENT, "batch_size"),),
}


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def copy_nodes(
    graph: dict[str, Any], nodes: Sequence[str], retitle: Callable[[str], str]
) -> dict[str, str]:
    """Add a copy of ``nodes`` to ``graph`` under fresh ids (after the largest numeric id),
    their links to each other following the copies, each title passed through ``retitle``.

    Returns old id -> new id.
    """
    first = max((int(k) for k in graph if k.isdigit()), default=0) + 1
    ids = {old: str(first + n) for n, old in enumerate(nodes)}
    for old in nodes:
        clone = copy.deepcopy(graph[old])
        for name, value in clone["inputs"].items():
            if _is_link(value) and str(value[0]) in ids:
                clone["inputs"][name] = [ids[str(value[0])], value[1]]
        title = (clone.get("_meta") or {}).get("title")
        if title:
            clone["_meta"]["title"] = retitle(title)
        graph[ids[old]] = clone
    return ids


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
    return people_by_plain_names(doc)


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
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind == DYNAMIC_COMBO


def spec_options(spec: Sequence[Any]) -> dict:
    """The options dict of an ``/object_info`` input spec (``{}`` when it has none)."""
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


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
        optional = (info.get("input") or {}).get("optional") or {}
        specs = []
        for name, spec in input_specs(info):
            if spec[0] == AUTOGROW:  # V3 list: the sockets the UI node has (people.person_1 ...)
                specs += autogrow_slots(name, spec, list(ui_inputs))
            else:
                specs.append((name, spec))
        while specs:
            name, spec = specs.pop(0)
            ui_input = ui_inputs.get(name) or ui_inputs.get(f"people.{name}") or {}
            link = ui_input.get("link")
            linked = source(link) if link is not None else None
            if not is_widget(spec):
                if linked is not None:
                    inputs[name] = linked
                continue
            options = spec_options(spec)
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
            elif "default" in options and name not in optional:  # a widget the UI lacks
                inputs[name] = options["default"]
            if spec[0] == DYNAMIC_COMBO:  # the chosen option's widgets follow the combo
                specs[:0] = option_specs(name, spec, inputs.get(name))
        api[node_id] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}
    if not api:
        raise QueueError("the UI workflow has no nodes to run: save a workflow with nodes in it")
    return people_by_plain_names(api)


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
    MODEL_NAME,
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
    FACE_PACK,
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
    if class_type in LOADERS:
        return (
            f"put the model under ComfyUI/models/{MODEL_FOLDER}/ there (Hugging Face "
            f"{HF_REPO}, folders {' and '.join(f'{m}/' for m in PUBLISHED_MODELS)}) and restart "
            "ComfyUI"
        )
    if class_type == FACE_ANALYSIS_LOADER:
        return f"unzip the insightface pack into ComfyUI/models/{FACE_FOLDER}/models/ there"
    if "name" in name or "ckpt" in name or "model" in name:
        return "copy the model file into the matching ComfyUI/models/ folder there"
    return "pick one of the offered values"
