"""The subject-encoding recipe, once: marked prompt + people -> text and subject conditioning.

Models are passed in, so every host runs the same steps: the headless pipeline passes the
diffusers CLIP text encoder (``encode_chunks``) and its :class:`~.postfuse.SubjectEncoder`,
the Subject Encode node passes its CLIP's ``encode_from_tokens`` and ComfyUI's modules. The
prompt's own 77-token chunks are encoded, so the marked positions are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from ..errors import InputError
from .photos import Person, mean_per_person, preprocess_people
from .prompt import ParsedPrompt
from .text import TokenChunks, chunk_tokens, tokenize_prompt


class ImageSide(Protocol):
    """What the recipe needs of a subject encoder (the engine's, or the ComfyUI node's)."""

    def embed_images(self, pixel_values: Tensor) -> Tensor: ...

    def condition(
        self, text_hidden: Tensor, positions: Sequence[int], image_embeds: Tensor
    ) -> Tensor: ...


@dataclass(frozen=True)
class SubjectEncoding:
    """What the SDM is conditioned on, and the crops that went into it."""

    text: Tensor  # (1, 77 * chunks, D): the prompt's text hidden states (markers removed)
    subject: Tensor  # the same with each person's embedding fused at their word's token
    crops: Tensor  # (photos, 3, 224, 224): every person's preprocessed photos, in order
    chunks: TokenChunks
    pooled: Any = None  # what ``encode_text`` returned beside the hidden states, if anything


def encode_subject(
    prompt: str | ParsedPrompt,
    people: Sequence[Person],
    *,
    tokenize: Callable[[str], Sequence[int]],
    special: tuple[int, int, int],
    encode_text: Callable[[TokenChunks], Tensor | tuple[Tensor, Any]],
    subject_encoder: ImageSide,
    object_resolution: int = 512,
) -> SubjectEncoding:
    """Tokenize ``prompt`` (``tokenize``: text -> ids without specials, ``special``: bos,
    eos, pad), encode its chunks with ``encode_text`` (hidden states, or hidden states and
    a pooled output) and fuse each person's mean image embedding into the token of the word
    before their marker. Every photo of every person goes through the image tower in one
    batch; a person with several photos is the mean of their embeddings."""
    per_person = preprocess_people(people, object_resolution=object_resolution)  # bad photos first
    bos, eos, pad = special
    chunks = chunk_tokens(tokenize_prompt(prompt, tokenize), bos_id=bos, eos_id=eos, pad_id=pad)
    encoded = encode_text(chunks)
    text, pooled = encoded if isinstance(encoded, tuple) else (encoded, None)
    subject = subject_encoder.condition(
        text, chunks.positions, embed_people(subject_encoder, per_person)
    )
    crops = torch.cat(per_person)
    return SubjectEncoding(text=text, subject=subject, crops=crops, chunks=chunks, pooled=pooled)


def embed_people(subject_encoder: ImageSide, people: Sequence[Tensor]) -> Tensor:
    """One (N_i, 3, 224, 224) tensor of preprocessed photos per person -> (S, D).

    A person's embedding is the mean of the projected embeddings of their photos (see
    :mod:`photos`); all photos go through the image encoder in one batch.
    """
    for i, crops in enumerate(people):
        if crops.ndim != 4 or crops.shape[0] < 1:
            raise InputError(
                f"person {i + 1}: photos must be (N, 3, H, W) with N >= 1, got shape "
                f"{tuple(crops.shape)}: build them with photos.preprocess_people"
            )
    if not people:
        return subject_encoder.embed_images(torch.empty(0, 3, 224, 224))
    embeds = subject_encoder.embed_images(torch.cat(list(people)))
    return mean_per_person(embeds, [len(c) for c in people])
