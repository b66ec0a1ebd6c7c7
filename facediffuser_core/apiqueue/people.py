"""The people of a workflow graph: which Load Image feeds each person, and giving a graph
other people (more, fewer, several photos of one).

A person is the chain of nodes from a ``LoadImage`` to Subject Encode's ``person_i``
(usually Load Image -> Face Crop). A person given several photos gets a copy of the chain
per photo, joined by stock ``ImageBatch`` nodes into one IMAGE batch that replaces the
single photo everywhere it was used (Subject Encode, Identity Similarity). ``ImageBatch``
resizes later images to the first one's size, which Face Crop's fixed-size crops make
harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..node_names import CROP_IMAGES, SUBJECT_ENCODE, person_input
from ..subject.prompt import MAX_SUBJECTS as MAX_PEOPLE
from .graph import LOAD_IMAGE, QueueError, copy_nodes, is_link, node_label, nodes_of

PHOTO_BATCH = "ImageBatch"  # stock ComfyUI node: image1 + image2 -> one batch
_MAX_CHAIN = 32


@dataclass(frozen=True)
class PersonChain:
    """The nodes from a ``LoadImage`` to a Subject Encode ``person_i`` input (image last)."""

    index: int
    nodes: tuple[str, ...]  # direct source first, the LoadImage last

    @property
    def load_image(self) -> str:
        return self.nodes[-1]


def _next_down(graph: Mapping[str, Any], node_id: str, person: int) -> str:
    """The node one step further towards the Load Image that feeds ``node_id``."""
    node = graph[node_id]
    linked = {k: v for k, v in node["inputs"].items() if is_link(v)}
    if node["class_type"] == PHOTO_BATCH:  # several photos: the first one's chain
        linked = {k: v for k, v in linked.items() if k == "image1"}
    pick = next((linked[k] for k in (CROP_IMAGES, "image", "pixels") if k in linked), None)
    if pick is None and len(linked) == 1:
        pick = next(iter(linked.values()))
    if pick is None:
        raise QueueError(
            f"cannot tell which Load Image node feeds person_{person}: "
            f"{node_label(graph, node_id)} has no 'images' input; feed each person "
            "from a Load Image node (directly or through Face Crop)"
        )
    return str(pick[0])


def _chain(graph: Mapping[str, Any], top: str, person: int) -> PersonChain:
    chain, node_id = [], top
    for _ in range(_MAX_CHAIN):
        if node_id not in graph:
            raise QueueError(f"the workflow links to node {node_id}, which is not in it")
        chain.append(node_id)
        if graph[node_id]["class_type"] == LOAD_IMAGE:
            return PersonChain(person, tuple(chain))
        node_id = _next_down(graph, node_id, person)
    raise QueueError(f"person_{person} is not fed by a Load Image node within {_MAX_CHAIN} nodes")


def person_chains(graph: Mapping[str, Any]) -> list[PersonChain]:
    """Which ``LoadImage`` feeds ``person_1`` ... of the (first) Subject Encode node."""
    encoders = nodes_of(graph, SUBJECT_ENCODE)
    if not encoders:
        return []
    inputs = graph[encoders[0]]["inputs"]
    chains: list[PersonChain] = []
    for i in range(1, MAX_PEOPLE + 1):
        link = inputs.get(person_input(i))
        if not is_link(link):
            continue
        if len(chains) != i - 1:
            raise QueueError(
                f"{node_label(graph, encoders[0])} has person_{i} wired but not "
                f"person_{len(chains) + 1}: wire the people in order, from person_1"
            )
        chains.append(_chain(graph, str(link[0]), i))
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
        if is_link(v) and str(v[0]) == node_id
    ]


def _drop_person(graph: dict, encoder: dict, chain: PersonChain) -> None:
    """Unwire person_k wherever it comes from the same source, then prune orphans."""
    name = person_input(chain.index)
    source = encoder["inputs"][name]
    for node in graph.values():
        if node["inputs"].get(name) == source:
            del node["inputs"][name]
    for _ in range(len(chain.nodes) + 1):
        orphans = [k for k in chain.nodes if k in graph and not _consumers(graph, k)]
        if not orphans:
            return
        for k in orphans:
            del graph[k]


def _add_person(graph: dict, encoder: dict, base: PersonChain, index: int) -> PersonChain:
    """A copy of person 1's chain (Load Image, Face Crop ...) wired as person ``index``."""
    source = encoder["inputs"][person_input(1)]
    ids = copy_nodes(graph, base.nodes, lambda text: re.sub(r"\b1\b", str(index), text))
    for node in graph.values():
        if node["inputs"].get(person_input(1)) == source:
            node["inputs"][person_input(index)] = [ids[str(source[0])], source[1]]
    return PersonChain(index, tuple(ids[k] for k in base.nodes))


def set_people(graph: dict, names: Sequence[str | Sequence[str]]) -> None:
    """Point the people's Load Image nodes at ``names`` (a list of names for a person with
    several photos), adding or removing people."""
    chains = person_chains(graph)
    if any(graph[n]["class_type"] == PHOTO_BATCH for chain in chains for n in chain.nodes):
        raise QueueError(
            "the workflow already joins several photos of a person with Image Batch: give "
            "the queue a workflow with one Load Image per person (the queue adds the batch)"
        )
    if not chains:
        raise QueueError(
            "the workflow has no Face-diffuser Subject Encode node with person inputs to take "
            "the reference images: use a Face-diffuser workflow (see workflows/api/)"
        )
    if len(names) > MAX_PEOPLE:
        raise QueueError(f"{len(names)} references given; Face-diffuser takes at most {MAX_PEOPLE}")
    encoder = graph[nodes_of(graph, SUBJECT_ENCODE)[0]]
    for chain in chains[len(names) :]:
        _drop_person(graph, encoder, chain)
    chains = chains[: len(names)]
    chains += [
        _add_person(graph, encoder, chains[0], i) for i in range(len(chains) + 1, len(names) + 1)
    ]
    for chain, name in zip(chains, names, strict=True):
        photos = [name] if isinstance(name, str) else list(name)
        graph[chain.load_image]["inputs"]["image"] = photos[0]
        if len(photos) > 1:
            add_photos(graph, chain, photos, encoder["inputs"][person_input(chain.index)])


def add_photos(graph: dict, chain: PersonChain, names: Sequence[str], source: list) -> None:
    """Give the person fed by ``source`` (``[chain.nodes[0], slot]``) the photos ``names``:
    its Load Image gets ``names[0]``, each further name a copy of the chain."""
    top, slot = str(source[0]), source[1]
    consumers = [
        (node_id, name)
        for node_id, node in graph.items()
        for name, value in node["inputs"].items()
        if is_link(value) and str(value[0]) == top and value[1] == slot
    ]
    current = [top, slot]
    for photo, name in enumerate(names[1:], start=2):
        ids = copy_nodes(graph, chain.nodes, lambda text, photo=photo: f"{text} (photo {photo})")
        graph[ids[chain.load_image]]["inputs"]["image"] = name
        batch_id = str(int(ids[chain.load_image]) + 1)  # the id after the copies
        graph[batch_id] = {
            "class_type": PHOTO_BATCH,
            "inputs": {"image1": list(current), "image2": [ids[top], slot]},
            "_meta": {"title": f"Photos of person {chain.index} (1-{photo})"},
        }
        current = [batch_id, 0]
    for node_id, name in consumers:
        graph[node_id]["inputs"][name] = list(current)
