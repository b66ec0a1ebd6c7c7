"""Settings by meaning: the people's chains, and prompt, photos, seed, steps, cfg, stage
boundaries and size written into a graph (nodes found by class, never by id).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine.stages import StageBoundaries
from ..errors import FaceDiffuserError
from ..node_names import (
    CROP_IMAGES,
    FACE_ANALYSIS_LOADER,
    FACE_CROP,
    FACE_PACK,
    FUSION_END,
    IDENTITY_SIMILARITY,
    LOADERS,
    MODEL_NAME,
    NEGATIVE,
    NODE_IDS,
    PROMPT,
    SAMPLERS,
    SCENE_END,
    SUBJECT_ENCODE,
    person_input,
)
from ..subject.prompt import MAX_SUBJECTS as MAX_PEOPLE
from ..subject.prompt import parse_prompt, require_subjects
from .errors import QueueError
from .graph import CLIP_TEXT_ENCODE, LOAD_IMAGE, TARGETS, _is_link, _node_label, copy_nodes
from .photos import PHOTO_BATCH, add_photos

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
    encoders = _nodes_of(graph, SUBJECT_ENCODE)
    if not encoders:
        return []
    inputs = graph[encoders[0]]["inputs"]
    chains = []
    for i in range(1, MAX_PEOPLE + 1):
        link = inputs.get(person_input(i))
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
            if node["class_type"] == LOAD_IMAGE:
                break
            linked = {k: v for k, v in node["inputs"].items() if _is_link(v)}
            if node["class_type"] == PHOTO_BATCH:  # several photos: the first one's chain
                linked = {k: v for k, v in linked.items() if k == "image1"}
            pick = next((linked[k] for k in (CROP_IMAGES, "image", "pixels") if k in linked), None)
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
    encoder = graph[_nodes_of(graph, SUBJECT_ENCODE)[0]]
    wanted = len(names)
    if wanted > MAX_PEOPLE:
        raise QueueError(f"{wanted} references given; Face-diffuser takes at most {MAX_PEOPLE}")
    # fewer people: unwire person_k everywhere it is wired from the same source, prune
    for chain in chains[wanted:]:
        name = person_input(chain.index)
        source = encoder["inputs"][name]
        for node in graph.values():
            if node["inputs"].get(name) == source:
                del node["inputs"][name]
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
        source = encoder["inputs"][person_input(1)]
        for i in range(len(chains) + 1, wanted + 1):
            ids = copy_nodes(graph, base.nodes, lambda title, i=i: re.sub(r"\b1\b", str(i), title))
            new_source = [ids[str(source[0])], source[1]]
            for node in graph.values():
                if node["inputs"].get(person_input(1)) == source:
                    node["inputs"][person_input(i)] = list(new_source)
            chains.append(PersonChain(i, tuple(ids[k] for k in base.nodes)))
    for chain, name in zip(chains, names, strict=False):
        photos = [name] if isinstance(name, str) else list(name)
        graph[chain.load_image]["inputs"]["image"] = photos[0]
        if len(photos) > 1:
            source = encoder["inputs"][person_input(chain.index)]
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
            link = graph[node_id]["inputs"].get(NEGATIVE)
            if not _is_link(link):
                continue
            source = graph.get(str(link[0])) or {}
            if source.get("class_type") != CLIP_TEXT_ENCODE:
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


def _refuse_several_encoders(graph: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """A prompt or people cannot be spread over several Subject Encode nodes by meaning."""
    encoders = _nodes_of(graph, SUBJECT_ENCODE)
    given = [k for k in ("prompt", "references") if settings.get(k) is not None]
    if len(encoders) > 1 and given:
        raise QueueError(
            f"the workflow has {len(encoders)} Subject Encode nodes (one per person, as in the "
            f"regional workflow), so the queue cannot tell which of them the {' and '.join(given)} "
            "of a batch row belong to: leave them out of the batch (set them in the workflow) "
            "or use a workflow with one Subject Encode"
        )


def apply_settings(graph: Mapping[str, Any], settings: Mapping[str, Any]) -> dict:
    """A copy of ``graph`` with the settings applied to the nodes that mean them.

    ``settings`` keys: ``prompt``, ``references`` (image names on the server, in marker
    order; a list of names for a person with several photos), ``negative``, ``seed``,
    ``steps``, ``cfg``, ``scene_end``, ``fusion_end``, ``width``, ``height``,
    ``batch_size``; None values are left as in the graph.
    """
    graph = copy.deepcopy(dict(graph))
    _refuse_several_encoders(graph, settings)
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
            pairs = TARGETS.get(key, ((CLIP_TEXT_ENCODE, "text"),))
            where = ", ".join(f"{c}.{n}" for c, n in pairs)
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
    people = len(person_chains(graph))
    for node_id in _nodes_of(graph, SUBJECT_ENCODE):
        prompt = graph[node_id]["inputs"].get(PROMPT)
        if isinstance(prompt, str):
            try:
                require_subjects(parse_prompt(prompt), people)
            except FaceDiffuserError as exc:
                raise QueueError(f"{_node_label(graph, node_id)}: {exc}") from None
    for class_type in SAMPLERS:
        for node_id in _nodes_of(graph, class_type):
            inputs = graph[node_id]["inputs"]
            scene, fusion = inputs.get(SCENE_END), inputs.get(FUSION_END)
            if isinstance(scene, (int, float)) and isinstance(fusion, (int, float)):
                try:
                    StageBoundaries.check_fractions(scene, fusion)
                except FaceDiffuserError as exc:
                    raise QueueError(f"{_node_label(graph, node_id)}: {exc}") from None


def pack_inputs() -> dict[str, set[str]]:
    """Every input of the pack's nodes that the queue reads or writes, by node id.

    tests/test_nodes_offline.py checks each against the node definitions (and their
    ranges against :mod:`facediffuser_core.ranges`): a renamed input breaks that test, not
    a user's batch.
    """
    used: dict[str, set[str]] = {}
    for pairs in TARGETS.values():
        for class_type, name in pairs:
            if class_type in NODE_IDS:
                used.setdefault(class_type, set()).add(name)
    for sampler in SAMPLERS:  # _set_negative, check_graph
        used.setdefault(sampler, set()).update((NEGATIVE, SCENE_END, FUSION_END))
    people = {person_input(i) for i in range(1, MAX_PEOPLE + 1)}  # person_chains, _set_people
    for node_id in (SUBJECT_ENCODE, IDENTITY_SIMILARITY):
        used.setdefault(node_id, set()).update(people)
    for loader in LOADERS:  # is_server_problem: a missing model moves the item on
        used.setdefault(loader, set()).add(MODEL_NAME)
    used.setdefault(FACE_ANALYSIS_LOADER, set()).add(FACE_PACK)
    used.setdefault(FACE_CROP, set()).add(CROP_IMAGES)  # person_chains walks through it
    return used
