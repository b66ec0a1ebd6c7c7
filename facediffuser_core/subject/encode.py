"""The subject-encoding recipe, once: marked prompt + people -> text and subject conditioning.

Models are passed in, so every host runs the same steps: the headless pipeline passes the
diffusers CLIP text encoder (``encode_chunks``), a ComfyUI node can pass its CLIP's
``encode_from_tokens``. The prompt's own 77-token chunks are encoded, so the marked
positions are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .photos import Person, preprocess_people
from .prompt import TokenChunks, chunk_tokens, tokenize_prompt


@dataclass(frozen=True)
class SubjectEncoding:
    """What the SDM is conditioned on, and the crops that went into it."""

    text: Tensor  # (1, 77 * chunks, D): the prompt's text hidden states (markers removed)
    subject: Tensor  # the same with each person's embedding fused at their word's token
    crops: Tensor  # (photos, 3, 224, 224): every person's preprocessed photos, in order
    chunks: TokenChunks


def encode_subject(
    prompt: str,
    people: Sequence[Person],
    *,
    tokenize: Callable[[str], Sequence[int]],
    special: tuple[int, int, int],
    encode_text: Callable[[TokenChunks], Tensor],
    subject_encoder: Any,
    object_resolution: int = 512,
) -> SubjectEncoding:
    """Tokenize ``prompt`` (``tokenize``: text -> ids without specials, ``special``: bos,
    eos, pad), encode its chunks with ``encode_text`` and fuse each person's mean image
    embedding (``subject_encoder``: a :class:`~.postfuse.SubjectEncoder`) into the token of
    the word before their marker."""
    bos, eos, pad = special
    chunks = chunk_tokens(tokenize_prompt(prompt, tokenize), bos_id=bos, eos_id=eos, pad_id=pad)
    text = encode_text(chunks)
    crops = preprocess_people(people, object_resolution=object_resolution)
    param = next(subject_encoder.parameters())
    embeds = subject_encoder.embed_people([c.to(param.device, param.dtype) for c in crops])
    subject = subject_encoder.condition(text, chunks.positions, embeds.to(text.dtype))
    return SubjectEncoding(text=text, subject=subject, crops=torch.cat(crops), chunks=chunks)
