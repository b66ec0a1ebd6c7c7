"""Workflow graphs in ComfyUI's API format: loading, nodes by class, copies of nodes, and
telling a server's missing pieces apart.

Pure data: a graph is ``{node_id: {"class_type", "inputs"}}`` (what ComfyUI's Workflow >
Export (API) writes, and what ``workflows/api/`` ships); nodes are found by class, never by
id. Nothing here talks to a server; ``object_info`` (a server's node definitions) is passed
in. UI-format workflows (Workflow > Save) are refused: turning one into the API format
needs the frontend (widget order, widgets its extensions add, subgraphs), so ComfyUI's own
Export (API) does it, not this client.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..catalog import FACE_FOLDER, HF_REPO, MODEL_FOLDER, PUBLISHED_MODELS
from ..errors import FaceDiffuserError
from ..node_names import (
    CFG,
    FACE_ANALYSIS_LOADER,
    FACE_PACK,
    FUSION_END,
    KSAMPLER,
    LOADERS,
    MODEL_NAME,
    PEOPLE,
    PERSON,
    PROMPT,
    SCENE_END,
    SEED,
    SNF_GUIDER,
    STEPS,
    SUBJECT_ENCODE,
)


class QueueError(FaceDiffuserError):
    """A workflow or server problem of ``facediffuser queue``; the message names the fix."""


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

MODEL_INPUTS = {  # inputs that name a model file: a refusal of one is the server's lack
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
_LISTED_PERSON = re.compile(rf"^{re.escape(PEOPLE)}\.({re.escape(PERSON)}_\d+)$")


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def nodes_of(graph: Mapping[str, Any], class_type: str) -> list[str]:
    """Ids of the nodes of one class, in id order (numeric ids numerically)."""
    ids = (k for k, n in graph.items() if n.get("class_type") == class_type)
    return sorted(ids, key=lambda k: (len(k), k))


def title(graph: Mapping[str, Any], node_id: str, class_type: str | None = None) -> str:
    node = graph.get(node_id) or {}
    return (node.get("_meta") or {}).get("title") or node.get("class_type") or class_type or "?"


def node_label(graph: Mapping[str, Any], node_id: str) -> str:
    return f"node {node_id} '{title(graph, node_id)}'"


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
            if is_link(value) and str(value[0]) in ids:
                clone["inputs"][name] = [ids[str(value[0])], value[1]]
        if (clone.get("_meta") or {}).get("title"):
            clone["_meta"]["title"] = retitle(clone["_meta"]["title"])
        graph[ids[old]] = clone
    return ids


def people_by_plain_names(graph: Mapping[str, Any]) -> dict:
    """``graph`` with every ``people.person_N`` input (ComfyUI's V3 growing list, as newer
    frontends export it) renamed ``person_N``, which the pack's nodes take alike (in place)."""
    for node in graph.values():
        inputs = node["inputs"]
        for key in [k for k in inputs if _LISTED_PERSON.match(k)]:
            plain = _LISTED_PERSON.match(key).group(1)
            if plain not in inputs:
                inputs[plain] = inputs.pop(key)
    return dict(graph)


def load_workflow(path: str | os.PathLike) -> dict:
    """An API-format graph (or a ``/prompt`` request body holding one), checked for shape."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QueueError(f"workflow {path} does not exist: give an existing .json file") from None
    except (OSError, ValueError) as exc:
        raise QueueError(
            f"workflow {path} is not readable JSON ({exc}): export it again from ComfyUI "
            "(Workflow > Export (API))"
        ) from None
    if isinstance(doc, dict) and isinstance(doc.get("nodes"), list) and "links" in doc:
        raise QueueError(
            f"workflow {path} is in ComfyUI's UI format (Workflow > Save): the queue takes the "
            "API format: open it in ComfyUI and use Workflow > Export (API), or use the "
            "shipped graphs in workflows/api/"
        )
    if isinstance(doc, dict) and isinstance(doc.get("prompt"), dict):
        doc = doc["prompt"]  # a /prompt request body
    if not isinstance(doc, dict) or not doc or not all(_is_node(n) for n in doc.values()):
        raise QueueError(
            f"workflow {path} is not an API-format graph: in ComfyUI use Workflow > Export (API)"
        )
    for node in doc.values():
        node.setdefault("inputs", {})
    return people_by_plain_names(doc)


def _is_node(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and isinstance(node.get("class_type"), str)
        and isinstance(node.get("inputs", {}), dict)
    )


def graph_digest(graph: Mapping[str, Any]) -> str:
    """16 hex digits that change whenever the graph does."""
    return hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:16]


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


def spec_options(spec: Sequence[Any]) -> dict:
    """The options dict of an ``/object_info`` input spec (``{}`` when it has none)."""
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def server_problems(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[str]:
    """Node classes of ``graph`` that the server does not have (checked once per server).

    Missing *models* are found by ComfyUI's own validation when the first item is queued
    (see :func:`is_server_problem`): loaders may accept names their list does not show.
    """
    return [
        f"{node_label(graph, node_id)} needs node type {node['class_type']}, which is not "
        "installed there: install its custom node pack and restart ComfyUI"
        for node_id, node in graph.items()
        if object_info.get(node["class_type"]) is None
    ]


def is_server_problem(body: Mapping[str, Any]) -> bool:
    """Does a 400 from ``POST /prompt`` say the *server* lacks something (model, node type)?

    Such an item is given to another server instead of failing; anything else (a wrong
    value in the item) fails the item.
    """
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    node_errors = body.get("node_errors") or {}
    if not node_errors:
        message = str(error.get("message", ""))
        return error.get("type") == "missing_node_type" or "does not exist" in message
    return all(
        err.get("type") in ("value_not_in_list", "custom_validation_failed")
        and (err.get("extra_info") or {}).get("input_name", "") in MODEL_INPUTS
        for entry in node_errors.values()
        for err in entry.get("errors") or [{}]
    )


def missing_hint(class_type: str, name: str) -> str:
    """Where the model a refused input names belongs on the server."""
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
