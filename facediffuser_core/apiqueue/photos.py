"""Several photos of one person in a workflow graph.

A person's photos each get their own copy of the person's chain (Load Image, then Face Crop
or whatever the workflow has), and stock ``ImageBatch`` nodes join the copies into one
IMAGE batch, which replaces the single photo everywhere it was used (Subject Encode's
``person_i``, Identity Similarity's). Subject Encode embeds each photo of the batch and
averages the projected embeddings. ``ImageBatch`` resizes later images to the first one's
size, so give the photos through a Face Crop (fixed-size crops) or at one size.
"""

from __future__ import annotations

from collections.abc import Sequence

from .graph import _is_link, copy_nodes

PHOTO_BATCH = "ImageBatch"  # stock ComfyUI node: image1 + image2 -> one batch


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
    current = [top, slot]
    for photo, name in enumerate(names[1:], start=2):
        ids = copy_nodes(graph, chain, lambda title, photo=photo: f"{title} (photo {photo})")
        graph[ids[chain[-1]]]["inputs"]["image"] = name
        batch_id = str(int(ids[chain[-1]]) + 1)  # the id after the copies
        graph[batch_id] = {
            "class_type": PHOTO_BATCH,
            "inputs": {"image1": list(current), "image2": [ids[top], slot]},
            "_meta": {"title": f"Photos of person {person} (1-{photo})"},
        }
        current = [batch_id, 0]
    for node_id, name in consumers:
        graph[node_id]["inputs"][name] = list(current)
