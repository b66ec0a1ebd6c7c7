"""The subject side: from a marked prompt and photos to the SDM's conditioning.

``prompt`` parses ``<|image|>`` markers (torch-free), ``reference`` and ``photos`` prepare
the reference images, ``text`` turns a parsed prompt into tokens and CLIP hidden states,
``postfuse`` fuses image and token embeddings, and ``encode`` (``encode_subject``) is the
one recipe that runs them, for the headless pipeline and the Subject Encode node alike.
"""
