"""The subject side: from a marked prompt and photos to the SDM's conditioning.

``prompt`` parses ``<|image|>`` markers (torch-free), ``reference`` and ``photos`` prepare
the reference images, ``text`` runs the CLIP text encoder, ``postfuse`` fuses image and
token embeddings.
"""
