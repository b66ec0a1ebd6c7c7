"""The SDM's subject encoder as ComfyUI-native modules (as core PhotoMaker builds its own).

The image tower is ComfyUI's own CLIP vision model (``comfy.clip_model``), the post-fusion
module the engine's :class:`PostfuseModule` built from ``comfy.ops.manual_cast``; both live
in one ComfyUI patcher (:mod:`.comfy_weights`) on the text-encoder device, so ComfyUI's
dtype choice, weight casting, offloading and lowvram apply. The tower is fed the engine's own
preprocessed pixels (pad to square, resize, CLIP-normalise; not ComfyUI's centre crop), and
its ``image_embeds`` output is what the engine's ``CLIPVisionModelWithProjection`` returns.
"""

from __future__ import annotations

import comfy.clip_model
import comfy.model_management as mm
import comfy.ops
import torch

from ..facediffuser_core.subject.postfuse import PostfuseModule, fit_to_tower, subject_conditioning
from ..facediffuser_core.weights.checkpoints import CheckpointParts
from ..facediffuser_core.weights.configs import vision_config
from .comfy_weights import assigns, load_weights, new_patcher


class ComfySubjectModules(torch.nn.Module):
    """Image tower + post-fusion under the published key names (image_encoder., postfuse.)."""

    def __init__(self, parts: CheckpointParts, dtype: torch.dtype, device: torch.device):
        super().__init__()
        cfg = vision_config(parts.parts["image_encoder"])
        self.image_size = cfg["image_size"]
        comfy_cfg = {**cfg, "model_type": "clip_vision_model"}
        ops = comfy.ops.manual_cast
        self.image_encoder = comfy.clip_model.CLIPVisionModelProjection(
            comfy_cfg, dtype, device, ops
        )
        dim = int(parts.parts["postfuse"]["layer_norm.weight"].shape[0])
        self.postfuse = PostfuseModule(dim, operations=ops, dtype=dtype, device=device)
        self.eval()
        self.requires_grad_(False)

    def load(self, parts: CheckpointParts, assign: bool) -> None:
        """The image tower's and post-fusion weights, read from the file a chunk at a time."""
        for name, module in (("image_encoder", self.image_encoder), ("postfuse", self.postfuse)):

            def load(chunk, module=module):
                return module.load_state_dict(chunk, strict=False, assign=assign)

            load_weights(parts, load, parts.parts[name], name)
        self.requires_grad_(False)


class SubjectEncoderHandle:
    """The FACEDIFFUSER_SUBJECT value: the modules, their patcher and their source file."""

    def __init__(self, parts: CheckpointParts, source: str):
        load_device = mm.text_encoder_device()
        offload_device = mm.text_encoder_offload_device()
        dtype = mm.text_encoder_dtype(load_device)
        self.module = ComfySubjectModules(parts, dtype, offload_device)
        self.source = source
        self.patcher = new_patcher(self.module, load_device, offload_device)
        self.module.load(parts, assigns(self.patcher))

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) preprocessed pixels -> (N, D) projected image embeddings (float32)."""
        mm.load_model_gpu(self.patcher)
        x = fit_to_tower(pixel_values.float(), self.module.image_size)
        with torch.no_grad():
            out = self.module.image_encoder(pixel_values=x.to(self.patcher.load_device))
        return out[2].to(mm.intermediate_device()).float()

    def condition(
        self, text_hidden: torch.Tensor, positions: list[int], image_embeds: torch.Tensor
    ) -> torch.Tensor:
        """``subject_conditioning`` computed in the text's dtype on the working device."""
        mm.load_model_gpu(self.patcher)
        with torch.no_grad():
            out = subject_conditioning(
                text_hidden,
                positions,
                image_embeds,
                self.module.postfuse,
                device=self.patcher.load_device,
                dtype=text_hidden.dtype,
            )
        return out.to(text_hidden.device, text_hidden.dtype)
