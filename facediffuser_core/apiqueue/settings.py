"""Settings by meaning: a batch row's prompt, people, seed, steps, cfg, stage boundaries and
size written into a graph, into the nodes that mean them (found by class, never by id).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..batching.model import SETTING_KEYS
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
from .graph import CLIP_TEXT_ENCODE, TARGETS, QueueError, is_link, node_label, nodes_of
from .people import person_chains, set_people


def _set_input(graph: dict, key: str, value: Any) -> int:
    count = 0
    for class_type, name in TARGETS[key]:
        for node_id in nodes_of(graph, class_type):
            inputs = graph[node_id]["inputs"]
            if is_link(inputs.get(name)):
                raise QueueError(
                    f"{key}: input {name} of {node_label(graph, node_id)} is wired from node "
                    f"{inputs[name][0]}, so the queue cannot set it: make it a plain value (a "
                    "widget) in the workflow"
                )
            inputs[name] = value
            count += 1
    return count


def _set_negative(graph: dict, text: str) -> int:
    count = 0
    for class_type in SAMPLERS:
        for node_id in nodes_of(graph, class_type):
            link = graph[node_id]["inputs"].get(NEGATIVE)
            if not is_link(link):
                continue
            source = graph.get(str(link[0])) or {}
            if source.get("class_type") != CLIP_TEXT_ENCODE:
                raise QueueError(
                    f"negative: the negative of {node_label(graph, node_id)} is not a CLIP Text "
                    "Encode node, so the queue cannot set its text"
                )
            source["inputs"]["text"] = text
            count += 1
    return count


def _refuse_several_encoders(graph: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """A prompt or people cannot be spread over several Subject Encode nodes by meaning."""
    encoders = nodes_of(graph, SUBJECT_ENCODE)
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

    ``settings`` keys: :data:`~facediffuser_core.batching.model.SETTING_KEYS`, with
    ``references`` the image names on the server, in marker order (a list of names for a
    person with several photos); None values are left as in the graph.
    """
    graph = copy.deepcopy(dict(graph))
    _refuse_several_encoders(graph, settings)
    for key, value in settings.items():
        if value is None:
            continue
        if key == "references":
            set_people(graph, list(value))
            continue
        if key not in SETTING_KEYS:
            raise QueueError(f"unknown setting {key!r}: known are {', '.join(SETTING_KEYS)}")
        found = _set_negative(graph, value) if key == "negative" else _set_input(graph, key, value)
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
            ids = nodes_of(graph, class_type)
            if ids and not is_link(graph[ids[0]]["inputs"].get(name)):
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
    for node_id in nodes_of(graph, SUBJECT_ENCODE):
        prompt = graph[node_id]["inputs"].get(PROMPT)
        if isinstance(prompt, str):
            try:
                require_subjects(parse_prompt(prompt), people)
            except FaceDiffuserError as exc:
                raise QueueError(f"{node_label(graph, node_id)}: {exc}") from None
    for class_type in SAMPLERS:
        for node_id in nodes_of(graph, class_type):
            inputs = graph[node_id]["inputs"]
            scene, fusion = inputs.get(SCENE_END), inputs.get(FUSION_END)
            if isinstance(scene, (int, float)) and isinstance(fusion, (int, float)):
                try:
                    StageBoundaries.check_fractions(scene, fusion)
                except FaceDiffuserError as exc:
                    raise QueueError(f"{node_label(graph, node_id)}: {exc}") from None


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
    people = {person_input(i) for i in range(1, MAX_PEOPLE + 1)}  # person_chains, set_people
    for node_id in (SUBJECT_ENCODE, IDENTITY_SIMILARITY):
        used.setdefault(node_id, set()).update(people)
    for loader in LOADERS:  # is_server_problem: a missing model moves the item on
        used.setdefault(loader, set()).add(MODEL_NAME)
    used.setdefault(FACE_ANALYSIS_LOADER, set()).add(FACE_PACK)
    used.setdefault(FACE_CROP, set()).add(CROP_IMAGES)  # person_chains walks through it
    return used
