"""Workflow graphs: loading, UI -> API conversion, settings by meaning, readable errors.

Pure data: a graph is ComfyUI's API format (``{node_id: {"class_type", "inputs"}}``) and
nodes are found by class, never by id. Nothing here talks to a server; ``object_info``
(a server's node definitions) is passed in.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FaceDiffuserError
from .dynamic import (
    AUTOGROW,
    DYNAMIC_COMBO,
    autogrow_slots,
    option_specs,
    people_by_plain_names,
)
from .errors import QueueError
from .photos import PHOTO_BATCH, add_photos

MAX_PEOPLE = 4


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
            if node["class_type"] == PHOTO_BATCH:  # several photos: the first one's chain
                linked = {k: v for k, v in linked.items() if k == "image1"}
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


def _set_people(graph: dict, names: Sequence[str | Sequence[str]]) -> None:
    """Point the people's Load Image nodes at ``names``, adding or removing people.

    A person given several photos (a list of names) gets a chain per photo joined by
    ``ImageBatch`` nodes (see :mod:`photos`).
    """
    chains = person_chains(graph)
    if any(graph[n]["class_type"] == PHOTO_BATCH for chain in chains for n in chain.nodes):
        raise QueueError(
            "the workflow already joins several photos of a person with Image Batch: give "
            "the queue a workflow with one Load Image per person (the queue adds the batch)"
        )
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
        photos = [name] if isinstance(name, str) else list(name)
        graph[chain.load_image]["inputs"]["image"] = photos[0]
        if len(photos) > 1:
            source = encoder["inputs"][f"person_{chain.index}"]
            add_photos(graph, chain.nodes, photos, source, chain.index)


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
    order; a list of names for a person with several photos), ``negative``, ``seed``,
    ``steps``, ``cfg``, ``scene_end``, ``fusion_end``, ``width``, ``height``,
    ``batch_size``; None values are left as in the graph.
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
    from ..subject import parse_prompt, require_subjects  # torch: imported only when needed

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
