"""Several photos of one person in a workflow graph.

A person's photos each get their own copy of the person's chain (Load Image, then Face Crop
or whatever the workflow has), and stock ``ImageBatch`` nodes join the copies into one
IMAGE batch, which replaces the single photo everywhere it was used (Subject Encode's
``person_i``, Identity Similarity's). Subject Encode embeds each photo of the batch and
averages the projected embeddings. ``ImageBatch`` resizes later images to the first one's
size, so give the photos through a Face Crop (fixed-size crops) or at one size.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

PHOTO_BATCH = "ImageBatch"  # stock ComfyUI node: image1 + image2 -> one batch


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def add_photos(
    graph: dict, chain: Sequence[str], names: Sequence[str], source: list, person: int
) -> None:
    """Give the person fed by ``source`` (``[chain[0], slot]``) the photos ``names``.

    ``chain`` is the person's nodes from the one feeding ``person_i`` down to its Load
    Image (last); its Load Image gets ``names[0]``, each further name a copy of the chain.
    """
    top, slot = str(source[0]), source[1]
    consumers = [
        (node_id, name)
        for node_id, node in graph.items()
        for name, value in node["inputs"].items()
        if _is_link(value) and str(value[0]) == top and value[1] == slot
    ]
    graph[chain[-1]]["inputs"]["image"] = names[0]
    next_id = max((int(k) for k in graph if k.isdigit()), default=0) + 1
    current = [top, slot]
    for photo, name in enumerate(names[1:], start=2):
        ids = {}
        for old in chain:
            ids[old] = str(next_id)
            next_id += 1
        for old in chain:
            clone = copy.deepcopy(graph[old])
            for key, value in clone["inputs"].items():
                if _is_link(value) and str(value[0]) in ids:
                    clone["inputs"][key] = [ids[str(value[0])], value[1]]
            title = (clone.get("_meta") or {}).get("title")
            if title:
                clone["_meta"]["title"] = f"{title} (photo {photo})"
            graph[ids[old]] = clone
        graph[ids[chain[-1]]]["inputs"]["image"] = name
        batch_id = str(next_id)
        next_id += 1
        graph[batch_id] = {
            "class_type": PHOTO_BATCH,
            "inputs": {"image1": list(current), "image2": [ids[top], slot]},
            "_meta": {"title": f"Photos of person {person} (1-{photo})"},
        }
        current = [batch_id, 0]
    for node_id, name in consumers:
        graph[node_id]["inputs"][name] = list(current)
