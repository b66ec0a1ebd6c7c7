"""Subject binding for the SDM: ``<|image|>`` markers, reference images, post-fusion.

Face-diffuser's subject-augmented model (SDM) reads the CLIP text embedding of the prompt in
which the token of the word *before* each ``<|image|>`` marker is replaced by a fusion of that
token's embedding with a CLIP image embedding of one reference person. This module holds the
host-independent pieces of that: parsing and tokenizing marked prompts (including ComfyUI-style
long prompts split in 77-token chunks), the reference-image preprocessing of the reference
implementation, the post-fusion MLP with the published parameter names, and the function that
writes the fused embeddings into the text hidden states.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError, ModelError, PromptError

MARKER = "<|image|>"
MAX_SUBJECTS = 4

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_EXAMPLE = "e.g. 'a man <|image|> and a woman <|image|> at the beach'"
# Anything that looks like a marker but is not the one the SDM was trained with.
_MARKER_LIKE = re.compile(r"<\|[^<>|\s]{0,20}\|>")
# How much a float image may stray outside [0, 1] before we call it a wrong value range.
_RANGE_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt split at its ``<|image|>`` markers."""

    segments: tuple[str, ...]  # text between markers; len == num_subjects + 1
    num_subjects: int
    clean_text: str  # markers removed, whitespace collapsed


def _is_word_char(ch: str) -> bool:
    # Letters, digits and combining marks: what CLIP's pre-tokenizer treats as word material.
    return unicodedata.category(ch)[0] in "LNM"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Split ``prompt`` at its ``<|image|>`` markers and check that each one follows a word.

    Zero markers is valid (``num_subjects == 0``); callers that need subjects check that.
    """
    if not isinstance(prompt, str):
        raise PromptError(
            f"the prompt must be text, got {type(prompt).__name__}: pass a string, {_EXAMPLE}"
        )
    if not prompt.strip():
        raise PromptError(
            "the prompt is empty: describe the image and put <|image|> right after the word "
            f"naming each reference person, {_EXAMPLE}"
        )
    segments = tuple(prompt.split(MARKER))
    num_subjects = len(segments) - 1

    for seg in segments:
        odd = _MARKER_LIKE.search(seg)
        if odd is not None:
            raise PromptError(
                f"the prompt contains {odd.group(0)!r}, which is not a marker Face-diffuser "
                f"knows: the only marker is {MARKER} (written exactly like that), {_EXAMPLE}"
            )
    if num_subjects > MAX_SUBJECTS:
        raise PromptError(
            f"the prompt has {num_subjects} {MARKER} markers but Face-diffuser supports at most "
            f"{MAX_SUBJECTS} subjects (its training maximum): remove "
            f"{num_subjects - MAX_SUBJECTS} marker(s) and the matching reference image(s)"
        )
    for i in range(num_subjects):
        before = segments[i].rstrip()
        if not before or not _is_word_char(before[-1]):
            if i == 0 and not before:
                where = "at the start of the prompt"
            elif not before:
                where = f"directly after marker {i}"
            else:
                where = f"after {_short(before[-20:])!r}"
            raise PromptError(
                f"marker {i + 1} ({MARKER}) is {where}, not right after a word: a marker binds "
                "the word just before it to a reference image, so put it directly after the "
                f"word naming that person, {_EXAMPLE}"
            )
    clean_text = " ".join("".join(segments).split())
    return ParsedPrompt(segments=segments, num_subjects=num_subjects, clean_text=clean_text)


def require_subjects(parsed: ParsedPrompt, num_references: int) -> None:
    """PromptError unless the prompt has markers and exactly one reference per marker."""
    if parsed.num_subjects == 0:
        raise PromptError(
            f"the prompt has no {MARKER} marker: put one right after the word for each person, "
            f"e.g. 'a man {MARKER} riding a horse', one reference image per marker"
        )
    if parsed.num_subjects != num_references:
        raise PromptError(
            f"the prompt has {parsed.num_subjects} {MARKER} marker(s) but "
            f"{num_references} reference image(s) were given: give exactly one image per "
            "marker, in marker order (image 1 binds the first marker)"
        )


@dataclass(frozen=True)
class SubjectTokens:
    """Content token ids of a marked prompt and the bound token of each subject."""

    ids: tuple[int, ...]  # no BOS/EOS, markers removed
    positions: tuple[int, ...]  # per subject, in marker order: index into ``ids``


def tokenize_prompt(prompt: str, encode: Callable[[str], Sequence[int]]) -> SubjectTokens:
    """Tokenize a marked prompt the way the reference's special-token tokenizer does.

    ``encode(text)`` must return ids without BOS/EOS. Each piece of text between markers is
    tokenized on its own and the pieces are concatenated; the token bound to marker ``i`` is the
    last token of the piece before it.
    """
    parsed = parse_prompt(prompt)
    ids: list[int] = []
    positions: list[int] = []
    for i, seg in enumerate(parsed.segments):
        seg_ids = [int(t) for t in encode(seg)] if seg.strip() else []
        ids.extend(seg_ids)
        if i < parsed.num_subjects:
            if not seg_ids:
                raise PromptError(
                    f"the text before marker {i + 1} ({_short(seg)!r}) gives no tokens, so "
                    f"there is no word to bind the reference image to: put {MARKER} right "
                    f"after the word naming the person, {_EXAMPLE}"
                )
            positions.append(len(ids) - 1)
    return SubjectTokens(ids=tuple(ids), positions=tuple(positions))


@dataclass(frozen=True)
class TokenChunks:
    """Token ids split in fixed-length CLIP chunks, with the flat bound positions."""

    chunks: tuple[tuple[int, ...], ...]  # each max_length long: BOS + content + EOS + pad
    positions: tuple[int, ...]  # flat indices into the concatenation of the chunks


def chunk_tokens(
    tokens: SubjectTokens | Sequence[int],
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_length: int = 77,
) -> TokenChunks:
    """Split content ids in ``max_length - 2``-token chunks, each wrapped in BOS/EOS and padded.

    Position ``p`` lands in chunk ``p // (max_length - 2)`` at flat index
    ``chunk * max_length + 1 + p % (max_length - 2)``. Empty content gives one chunk.
    """
    if isinstance(tokens, SubjectTokens):
        ids, positions = tokens.ids, tokens.positions
    else:
        ids, positions = tuple(int(t) for t in tokens), ()
    if max_length < 3:
        raise InputError(
            f"max_length={max_length} leaves no room for content between BOS and EOS: "
            "use the text encoder's length (77 for CLIP)"
        )
    per_chunk = max_length - 2
    pieces = [ids[i : i + per_chunk] for i in range(0, len(ids), per_chunk)] or [()]
    chunks = tuple(
        (bos_id, *piece, eos_id) + (pad_id,) * (per_chunk - len(piece)) for piece in pieces
    )
    flat = []
    for p in positions:
        if not 0 <= p < len(ids):
            raise InputError(
                f"bound position {p} is outside the {len(ids)} content tokens: build the "
                "positions with tokenize_prompt from the same prompt"
            )
        flat.append((p // per_chunk) * max_length + 1 + p % per_chunk)
    return TokenChunks(chunks=chunks, positions=tuple(flat))


# --------------------------------------------------------------------------- reference images


def _as_hwc_float(image: Tensor | np.ndarray) -> Tensor:
    """Any accepted image layout -> (H, W, 3) float32 in [0, 1]."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, Tensor):
        raise InputError(
            f"a reference image must be a torch tensor (H, W, 3), got {type(image).__name__}: "
            "load it as a ComfyUI IMAGE or convert it with torch.from_numpy(np.asarray(img))"
        )
    shape = tuple(image.shape)
    if image.ndim == 4:
        if shape[0] != 1:
            raise InputError(
                f"a reference image has shape {shape}, a batch of {shape[0]} images: pass one "
                "image per subject (split the batch, e.g. with an image-from-batch node)"
            )
        image = image[0]
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"a reference image has shape {shape}; expected (H, W, 3) RGB (also accepted: "
            "(H, W, 4) RGBA, (H, W, 1) or (H, W) grey, (1, H, W, C)). Channels-first images "
            "need .permute(1, 2, 0)"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"a reference image has shape {shape}, with no pixels: pass a real image")
    if image.shape[-1] == 4:
        image = image[..., :3]
    elif image.shape[-1] == 1:
        image = image.expand(-1, -1, 3)

    if image.dtype == torch.uint8:
        return image.to(torch.float32) / 255.0
    if not image.is_floating_point():
        raise InputError(
            f"a reference image has dtype {image.dtype}; expected uint8 (0..255) or float "
            "(0..1): convert it, e.g. image.float() / 255 for 8-bit data"
        )
    image = image.to(torch.float32)
    if not torch.isfinite(image).all():
        raise InputError("a reference image contains NaN or infinite values: pass a valid image")
    lo, hi = float(image.min()), float(image.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise InputError(
            f"a float reference image has values in [{lo:.3g}, {hi:.3g}] but must lie in "
            "[0, 1] (ComfyUI IMAGE layout): divide 0..255 data by 255, or map [-1, 1] data "
            "with (x + 1) / 2"
        )
    return image.clamp(0.0, 1.0)


def preprocess_reference(image: Tensor, *, object_resolution: int = 512, size: int = 224) -> Tensor:
    """Reference preprocessing of one image -> (3, size, size) float32, CLIP-normalised.

    As the reference (FastComposer's object transforms, then its image encoder) does it, on
    8-bit values: pad with black by ``(long - short) // 2`` on both sides (an odd difference
    leaves the image one pixel from square, and the resize absorbs it), resize to
    ``object_resolution`` square (bilinear, antialiased) and round back to 8 bits, divide by
    255, resize to ``size`` (bilinear, antialiased) and normalise with the CLIP mean/std.
    Float images are taken at 8 bits first (ComfyUI's IMAGE holds 8-bit values / 255).
    """
    for name, value in (("object_resolution", object_resolution), ("size", size)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    x = torch.round(_as_hwc_float(image).permute(2, 0, 1) * 255.0)  # (3, H, W), 0..255
    h, w = x.shape[-2:]
    pad = abs(h - w) // 2
    if pad:
        sides = (pad, pad, 0, 0) if h > w else (0, 0, pad, pad)
        x = F.pad(x, sides, mode="constant", value=0.0)
    x = x[None]
    if tuple(x.shape[-2:]) != (object_resolution, object_resolution):
        x = F.interpolate(
            x,
            size=(object_resolution, object_resolution),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    x = torch.round(x).clamp(0.0, 255.0) / 255.0  # the reference keeps uint8 here
    if object_resolution != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std)[0].contiguous()


def preprocess_references(images: Sequence[Tensor], **kw) -> Tensor:
    """Preprocess several reference images (in subject order) -> (N, 3, size, size)."""
    out = []
    for i, image in enumerate(images):
        try:
            out.append(preprocess_reference(image, **kw))
        except InputError as exc:
            raise InputError(f"reference image {i + 1}: {exc}") from exc
    if not out:
        size = kw.get("size", 224)
        return torch.empty(0, 3, size, size)
    return torch.stack(out)


# --------------------------------------------------------------------------- post-fusion


class MLP(nn.Module):
    """LayerNorm(in) -> Linear(in, hidden) -> GELU -> Linear(hidden, out) (+ input).

    ``operations`` supplies ``Linear`` and ``LayerNorm`` (``torch.nn`` by default; a host
    passes its own, e.g. ComfyUI's ``comfy.ops.manual_cast``, for its casting and offloading).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        use_residual: bool = True,
        operations: Any = nn,
        **factory: Any,
    ):
        super().__init__()
        if use_residual and in_dim != out_dim:
            raise ValueError(f"a residual MLP needs in_dim == out_dim, got {in_dim} != {out_dim}")
        self.layernorm = operations.LayerNorm(in_dim, **factory)
        self.fc1 = operations.Linear(in_dim, hidden_dim, **factory)
        self.act = nn.GELU()
        self.fc2 = operations.Linear(hidden_dim, out_dim, **factory)
        self.use_residual = use_residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.fc2(self.act(self.fc1(self.layernorm(x))))
        return y + x if self.use_residual else y


class PostfuseModule(nn.Module):
    """Fuses a text token embedding with an image embedding (published key names)."""

    def __init__(self, embed_dim: int = 768, operations: Any = nn, **factory: Any):
        """``operations``/``factory`` (dtype, device) as for :class:`MLP`; key names unchanged."""
        super().__init__()
        self.embed_dim = embed_dim
        d = embed_dim
        self.mlp1 = MLP(2 * d, d, d, use_residual=False, operations=operations, **factory)
        self.mlp2 = MLP(d, d, d, use_residual=True, operations=operations, **factory)
        self.layer_norm = operations.LayerNorm(embed_dim, **factory)

    def forward(self, text_embeds: Tensor, image_embeds: Tensor) -> Tensor:
        """``(..., D), (..., D) -> (..., D)``; leading dimensions broadcast."""
        d = self.embed_dim
        if text_embeds.shape[-1] != d or image_embeds.shape[-1] != d:
            raise InputError(
                f"post-fusion expects {d}-d embeddings, got text {text_embeds.shape[-1]}-d and "
                f"image {image_embeds.shape[-1]}-d: the text encoder, image projection and "
                "postfuse module must come from the same Face-diffuser SDM checkpoint"
            )
        lead = torch.broadcast_shapes(text_embeds.shape[:-1], image_embeds.shape[:-1])
        t = text_embeds.expand(*lead, d)
        o = image_embeds.to(text_embeds.dtype).expand(*lead, d)
        h = self.mlp1(torch.cat([t, o], dim=-1)) + t
        return self.layer_norm(self.mlp2(h))


def subject_conditioning(
    text_hidden: Tensor,
    positions: Sequence[int],
    image_embeds: Tensor,
    postfuse: PostfuseModule,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Return a copy of ``text_hidden`` with each bound position replaced by its fusion.

    ``text_hidden``: (B, L, D); ``image_embeds``: (S, D) shared by the batch or (B, S, D);
    ``positions``: S indices into L, in marker order. Other positions are unchanged. The
    fusion runs on ``device`` in ``dtype`` (default: those of the module's weights; a host
    that casts weights on the fly, like ComfyUI's lowvram mode, names its own).
    """
    if text_hidden.ndim != 3:
        raise InputError(
            f"text hidden states must be (batch, tokens, dim), got shape {tuple(text_hidden.shape)}"
        )
    b, length, d = text_hidden.shape
    if image_embeds.ndim == 2:
        image_embeds = image_embeds[None]
    if image_embeds.ndim != 3 or image_embeds.shape[0] not in (1, b):
        raise InputError(
            f"image embeddings must be (subjects, dim) or (batch={b}, subjects, dim), got shape "
            f"{tuple(image_embeds.shape)}"
        )
    positions = [int(p) for p in positions]
    s = image_embeds.shape[1]
    if len(positions) != s:
        raise PromptError(
            f"the prompt has {len(positions)} {MARKER} marker(s) but {s} reference image(s) were "
            "given: add one image per marker, in marker order (or one marker per image)"
        )
    if image_embeds.shape[-1] != d or postfuse.embed_dim != d:
        raise InputError(
            f"dimension mismatch: text hidden states are {d}-d, image embeddings "
            f"{image_embeds.shape[-1]}-d, post-fusion module {postfuse.embed_dim}-d: use the text "
            "encoder, image encoder and postfuse module of the same SDM checkpoint"
        )
    bad = [p for p in positions if not 0 <= p < length]
    if bad:
        raise InputError(
            f"bound token position(s) {bad} are outside the {length} text tokens: compute the "
            "positions from the same prompt and chunking as the text hidden states"
        )
    if len(set(positions)) != len(positions):
        raise InputError(
            f"bound token positions {positions} repeat: each subject needs its own word"
        )
    out = text_hidden.clone()
    if not positions:
        return out
    param = next(postfuse.parameters())
    device = param.device if device is None else device
    dtype = param.dtype if dtype is None else dtype
    idx = torch.tensor(positions, device=text_hidden.device)
    t = text_hidden.index_select(1, idx).to(device, dtype)  # (B, S, D)
    o = image_embeds.to(device, dtype).expand(b, s, d)
    fused = postfuse(t, o).to(text_hidden.device, text_hidden.dtype)
    out[:, idx] = fused
    return out


def fit_to_tower(pixel_values: Tensor, size: int | None) -> Tensor:
    """Preprocessed (N, 3, H, W) pixels resized to a tower's ``size`` (no-op when it fits).

    Interpolation weights sum to 1, so resizing commutes with the CLIP normalisation.
    """
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise InputError(
            f"pixel values must be (N, 3, H, W), got shape {tuple(pixel_values.shape)}: "
            "build them with preprocess_references"
        )
    if size is None or tuple(pixel_values.shape[-2:]) == (size, size):
        return pixel_values
    return F.interpolate(
        pixel_values, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


class SubjectEncoder(nn.Module):
    """What the SDM needs beyond SD1.5: CLIP image tower + projection, and post-fusion."""

    def __init__(self, image_encoder: nn.Module, postfuse: PostfuseModule):
        super().__init__()
        proj = getattr(getattr(image_encoder, "config", None), "projection_dim", None)
        if proj is not None and proj != postfuse.embed_dim:
            raise ModelError(
                f"the image encoder projects to {proj}-d but the postfuse module is "
                f"{postfuse.embed_dim}-d: load both from the same Face-diffuser SDM checkpoint"
            )
        self.image_encoder = image_encoder
        self.postfuse = postfuse

    def embed_images(self, pixel_values: Tensor) -> Tensor:
        """(N, 3, 224, 224) CLIP-normalised pixels -> (N, D) projected image embeddings."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise InputError(
                f"pixel values must be (N, 3, H, W), got shape {tuple(pixel_values.shape)}: "
                "build them with preprocess_references"
            )
        param = next(self.image_encoder.parameters())
        x = pixel_values.to(param.device, param.dtype)
        size = getattr(getattr(self.image_encoder, "config", None), "image_size", None)
        return self.image_encoder(pixel_values=fit_to_tower(x, size)).image_embeds

    def embed_people(self, people: Sequence[Tensor]) -> Tensor:
        """One (N_i, 3, 224, 224) tensor of preprocessed photos per person -> (S, D).

        A person's embedding is the mean of the projected embeddings of their photos (see
        :mod:`photos`); all photos go through the image encoder in one batch.
        """
        from .photos import mean_per_person

        for i, crops in enumerate(people):
            if crops.ndim != 4 or crops.shape[0] < 1:
                raise InputError(
                    f"person {i + 1}: photos must be (N, 3, H, W) with N >= 1, got shape "
                    f"{tuple(crops.shape)}: build them with photos.preprocess_people"
                )
        if not people:
            return self.embed_images(torch.empty(0, 3, 224, 224))
        embeds = self.embed_images(torch.cat(list(people)))
        return mean_per_person(embeds, [len(c) for c in people])

    def condition(
        self, text_hidden: Tensor, positions: Sequence[int], image_embeds: Tensor
    ) -> Tensor:
        """``subject_conditioning`` with this encoder's post-fusion module."""
        return subject_conditioning(text_hidden, positions, image_embeds, self.postfuse)
