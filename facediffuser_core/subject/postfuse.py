"""Post-fusion: the MLP with the published parameter names and the subject encoder.

``subject_conditioning`` writes the fused (token, image) embeddings into the text hidden
states at the marked positions; ``SubjectEncoder`` is CLIP's vision tower, its projection
and the post-fusion module in one ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, ModelError, PromptError
from .prompt import MARKER

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
        """Photos per person -> (S, D) mean embeddings: :func:`.encode.embed_people`."""
        from .encode import embed_people

        return embed_people(self, people)

    def condition(
        self, text_hidden: Tensor, positions: Sequence[int], image_embeds: Tensor
    ) -> Tensor:
        """``subject_conditioning`` with this encoder's post-fusion module."""
        return subject_conditioning(text_hidden, positions, image_embeds, self.postfuse)
