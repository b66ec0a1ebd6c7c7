"""Turn Face-diffuser checkpoint parts into ComfyUI's MODEL, CLIP and VAE objects.

The engine maps the files and gives each part in its canonical layout; here those tensors
become ComfyUI objects managed by ComfyUI's model management, read from the file a chunk at a
time as they go in (:mod:`.comfy_weights`), so loading never holds a second copy. The
architecture is read from the weights (never from ComfyUI's fixed list of known configs), so
the published SD1.5-sized models and the engine's tiny test models go through the same path.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import comfy.model_management as mm
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import folder_paths
import torch
from comfy import model_detection

from ..facediffuser_core.errors import CheckpointError, ModelError
from ..facediffuser_core.weights.checkpoints import CheckpointParts, load_parts
from ..facediffuser_core.weights.configs import text_config, unet_config_from_diffusers, vae_config
from ..facediffuser_core.weights.ldm import unet_to_ldm
from ..facediffuser_core.weights.modelfiles import find_tokenizer
from ..facediffuser_core.weights.models import check_compatible, verify_parts
from .comfy_subject import SubjectEncoderHandle
from .comfy_weights import assigns, load_weights, new_patcher

log = logging.getLogger(__name__)

STANDARD_VOCAB = 49408  # SD1.5's CLIP tokenizer; other sizes need their tokenizer folder


def build_model(unet_sd: dict[str, torch.Tensor], parts: CheckpointParts) -> Any:
    """A ComfyUI MODEL for a diffusers-layout SD1.5-family UNet of any width, built as
    ComfyUI's ``load_diffusion_model_state_dict`` builds one (``parts`` reads the tensors)."""
    ldm = unet_to_ldm(unet_sd, unet_config_from_diffusers(unet_sd))
    unet_config = model_detection.detect_unet_config(ldm, "")
    if unet_config is None:
        raise ModelError("the UNet weights do not describe an SD1.5-style UNet")
    model_config = comfy.supported_models.SD15(unet_config)
    parameters = sum(t.numel() for t in ldm.values())
    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    supported = list(model_config.supported_inference_dtypes)
    unet_dtype = mm.unet_dtype(model_params=parameters, supported_dtypes=supported)
    manual_cast = mm.unet_manual_cast(unet_dtype, load_device, supported)
    model_config.set_inference_dtype(unet_dtype, manual_cast)
    model = model_config.get_model(ldm, "")
    patcher = new_patcher(model, load_device, offload_device)
    if not mm.is_device_cpu(offload_device):
        model.to(offload_device)
    ldm = model_config.process_unet_state_dict(ldm)
    assign = assigns(patcher)

    def load(chunk):
        return model.diffusion_model.load_state_dict(chunk, strict=False, assign=assign)

    load_weights(parts, load, ldm, "UNet")
    return patcher


class _ClipTarget:
    """What ``comfy.sd.CLIP`` builds from: a tokenizer and a text-model factory."""

    def __init__(self, tokenizer: Any, clip: Any):
        self.tokenizer, self.clip, self.params = tokenizer, clip, {}


def build_clip(
    text_sd: dict[str, torch.Tensor], tokenizer_dir: Path | None, parts: CheckpointParts
) -> Any:
    """A ComfyUI CLIP for a CLIP text encoder of any width (flat transformers-5 keys)."""
    cfg = text_config(text_sd)
    vocab = cfg["vocab_size"]
    if tokenizer_dir is None and vocab != STANDARD_VOCAB:
        raise ModelError(
            f"this text encoder has a {vocab}-token vocabulary, not SD1.5's {STANDARD_VOCAB}: "
            "put its tokenizer/ folder (vocab.json, merges.txt) beside the model folder"
        )
    comfy_cfg = {
        "num_hidden_layers": cfg["num_hidden_layers"],
        "hidden_size": cfg["hidden_size"],
        "intermediate_size": cfg["intermediate_size"],
        "num_attention_heads": cfg["num_attention_heads"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "vocab_size": vocab,
        "hidden_act": cfg.get("hidden_act", "quick_gelu"),
        "projection_dim": cfg.get("projection_dim", cfg["hidden_size"]),
        "layer_norm_eps": cfg.get("layer_norm_eps", 1e-5),
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
    }
    special = {"start": cfg["bos_token_id"], "end": cfg["eos_token_id"], "pad": cfg["eos_token_id"]}
    clip_model = functools.partial(
        comfy.sd1_clip.SDClipModel,
        textmodel_json_config=comfy_cfg,
        special_tokens=special,
        return_projected_pooled=False,
    )
    tokenizer = functools.partial(
        comfy.sd1_clip.SDTokenizer,
        tokenizer_path=str(tokenizer_dir) if tokenizer_dir else None,
        embedding_size=cfg["hidden_size"],
    )
    target = _ClipTarget(
        tokenizer=functools.partial(comfy.sd1_clip.SD1Tokenizer, tokenizer=tokenizer),
        clip=functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=clip_model),
    )
    embeddings = folder_paths.get_folder_paths("embeddings")
    clip = comfy.sd.CLIP(target=target, embedding_directory=embeddings)
    prefixed = {f"text_model.{k}": v for k, v in text_sd.items()}
    key = "text_model.embeddings.token_embedding.weight"
    if prefixed[key].shape[0] < STANDARD_VOCAB:
        # ComfyUI's CLIP text model always has SD1.5's 49408 rows; a smaller vocabulary
        # (the tiny test models) fills the first rows, the rest are never indexed.
        table = parts.fresh(prefixed[key])
        padded = table.new_zeros(STANDARD_VOCAB, table.shape[1])
        padded[: table.shape[0]] = table
        prefixed[key] = padded
    load_weights(parts, clip.load_sd, prefixed, "text encoder")  # ComfyUI's load_sd decides
    return clip


def build_vae(vae_sd: dict[str, torch.Tensor], parts: CheckpointParts) -> Any:
    """A ComfyUI VAE for a diffusers AutoencoderKL of any width (4 latent channels).

    ComfyUI's VAE takes its weights when it is built, so they are read whole first: the VAE
    is small (84 M parameters), about 7 % of an SDM.
    """
    cfg = vae_config(vae_sd)
    widths = list(cfg["block_out_channels"])
    ddconfig = {
        "double_z": True,
        "z_channels": cfg["latent_channels"],
        "resolution": 256,
        "in_channels": cfg.get("in_channels", 3),
        "out_ch": cfg.get("out_channels", 3),
        "ch": widths[0],
        "ch_mult": [w // widths[0] for w in widths],
        "num_res_blocks": cfg["layers_per_block"],
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    config = {"params": {"ddconfig": ddconfig, "embed_dim": cfg["latent_channels"]}}
    return comfy.sd.VAE(sd={k: parts.fresh(v) for k, v in vae_sd.items()}, config=config)


@dataclass
class LoadedCheckpoint:
    model: Any
    clip: Any
    vae: Any
    subject: SubjectEncoderHandle | None


def load_checkpoint(path: Path, expect: str) -> LoadedCheckpoint:
    """Read a published file or converted set and build every ComfyUI object it holds."""
    parts = load_parts(path)
    if expect == "sdm" and parts.kind != "sdm":
        raise ModelError(
            f"{path} is a TDM (it has no image encoder / post-fusion module): load it with "
            "'Load Face-diffuser TDM' and pick the SDM file here"
        )
    if "text_encoder" not in parts.parts:
        raise CheckpointError(f"{path} has no text encoder weights: Face-diffuser needs them")
    verify_parts(parts)  # the CLI's checks: missing, unexpected, mis-shaped keys, per part
    check_compatible(parts)
    tokenizer_dir = find_tokenizer(path)
    model = build_model(parts.parts["unet"], parts)
    clip = build_clip(parts.parts["text_encoder"], tokenizer_dir, parts)
    vae = build_vae(parts.parts["vae"], parts)
    if expect == "tdm" and parts.kind == "sdm":
        log.warning("Face-diffuser: %s is an SDM checkpoint loaded as the TDM", path)
    subject = None
    if expect == "sdm":
        subject = SubjectEncoderHandle(parts, str(path))
    return LoadedCheckpoint(model=model, clip=clip, vae=vae, subject=subject)
