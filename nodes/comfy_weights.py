"""Checkpoint tensors into ComfyUI-managed modules, the way ComfyUI's own loaders do it.

Every module the loaders build (the UNets, the subject encoder; CLIP and VAE are ComfyUI's own
classes) gets the patcher ComfyUI gives its models (``CoreModelPatcher``: on ComfyUI 0.12+
with DynamicVRAM, the dynamic patcher), so model management loads, offloads and partially
loads it (``--lowvram``, ``--novram``) like any model. Weights go in as ComfyUI loads them
(assigned for a dynamic patcher, copied otherwise), a few tensors at a time, each read from
the file just then: the process never holds the file and the model together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import comfy.model_patcher
import torch

from ..facediffuser_core.errors import CheckpointError
from ..facediffuser_core.weights.checkpoints import CheckpointParts


def new_patcher(model: torch.nn.Module, load_device, offload_device) -> Any:
    """The patcher ComfyUI's loaders give a new model (``CoreModelPatcher`` where it exists)."""
    patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    return patcher(model, load_device=load_device, offload_device=offload_device)


def assigns(patcher) -> bool:
    """Whether ComfyUI loads this patcher's weights by assignment (dynamic patchers)."""
    return bool(getattr(patcher, "is_dynamic", lambda: False)())


def load_weights(
    parts: CheckpointParts,
    load: Callable[[dict[str, torch.Tensor]], Any],
    tensors: Mapping[str, torch.Tensor],
    what: str,
) -> None:
    """Give ``tensors`` to ``load`` (a module's non-strict ``load_state_dict``, or ComfyUI's
    ``CLIP.load_sd``) in chunks read from the file; CheckpointError if keys are left over."""
    missing, unexpected = parts.load_in_chunks(load, tensors)
    missing = [k for k in missing if "text_projection" not in k and "logit_scale" not in k]
    if missing or unexpected:
        raise CheckpointError(
            f"this ComfyUI's {what} does not take the {what} weights of {parts.source} (missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}): the checkpoint is damaged or not "
            "SD1.5-based; if it loads headless, please report this with your ComfyUI version"
        )
