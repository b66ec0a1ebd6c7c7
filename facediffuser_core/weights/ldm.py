"""diffusers <-> LDM (CompVis / ComfyUI) key mapping for ``UNet2DConditionModel``.

The published Face-diffuser UNets are diffusers-layout; ComfyUI's UNETLoader only reads the
original LDM layout (``input_blocks`` / ``middle_block`` / ``output_blocks``). The mapping here
is derived from the block structure of a config, so it covers any number of levels, resnets
per level, transformer depth and per-level attention (SD1.5 and the tiny test models alike).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import torch

from ..errors import CheckpointError, ModelError

LDM_PREFIX = "model.diffusion_model."
StateDict = dict[str, torch.Tensor]

# diffusers ResnetBlock2D sub-module -> LDM ResBlock sub-module
_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_RESNET_FROM_LDM = {v: k for k, v in _RESNET_TO_LDM.items()}

_DOWN_TYPES = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
_UP_TYPES = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}
_MID_TYPES = {"UNetMidBlock2DCrossAttn": True, "UNetMidBlock2D": False, None: None}


def _per_level(value: Any, levels: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * levels
    values = [int(v) for v in value]
    if len(values) != levels:
        raise ModelError(
            f"UNet config {name} has {len(values)} entries for {levels} levels: "
            "give one value per down block"
        )
    return values


def _module_map(config: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(diffusers module prefix, LDM module prefix, is_resnet) for every module of the UNet."""
    down = list(config.get("down_block_types", ()))
    up = list(config.get("up_block_types", ()))
    if len(down) != len(up) or not down:
        raise ModelError(
            f"UNet config has {len(down)} down blocks and {len(up)} up blocks: "
            "an SD-style UNet needs the same non-zero number of both"
        )
    for kind, table in ((down, _DOWN_TYPES), (up, _UP_TYPES)):
        for t in kind:
            if t not in table:
                raise ModelError(
                    f"UNet block type {t!r} has no LDM equivalent here; supported: {sorted(table)}"
                )
    mid_type = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid_type not in _MID_TYPES:
        raise ModelError(
            f"UNet mid_block_type {mid_type!r} is not supported; use "
            "'UNetMidBlock2DCrossAttn', 'UNetMidBlock2D' or None"
        )
    levels = len(down)
    lpb = _per_level(config.get("layers_per_block", 2), levels, "layers_per_block")

    m: list[tuple[str, str, bool]] = [
        ("conv_in.", "input_blocks.0.0.", False),
        ("time_embedding.linear_1.", "time_embed.0.", False),
        ("time_embedding.linear_2.", "time_embed.2.", False),
        ("conv_norm_out.", "out.0.", False),
        ("conv_out.", "out.2.", False),
    ]
    if config.get("num_class_embeds") is not None:
        m.append(("class_embedding.", "label_emb.", False))
    elif config.get("class_embed_type") in ("projection", "timestep"):
        m.append(("class_embedding.linear_1.", "label_emb.0.0.", False))
        m.append(("class_embedding.linear_2.", "label_emb.0.2.", False))

    n = 1
    for i, block in enumerate(down):
        attn = _DOWN_TYPES[block]
        for j in range(lpb[i]):
            m.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n}.0.", True))
            if attn:
                m.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n}.1.", False))
            n += 1
        if i < levels - 1:
            m.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{n}.0.op.", False))
            n += 1

    mid_attn = _MID_TYPES[mid_type]
    if mid_attn is True:
        m.append(("mid_block.resnets.0.", "middle_block.0.", True))
        m.append(("mid_block.attentions.0.", "middle_block.1.", False))
        m.append(("mid_block.resnets.1.", "middle_block.2.", True))
    elif mid_attn is False:
        m.append(("mid_block.resnets.0.", "middle_block.0.", True))
        m.append(("mid_block.resnets.1.", "middle_block.1.", True))

    n = 0
    rev = list(reversed(lpb))
    for i, block in enumerate(up):
        attn = _UP_TYPES[block]
        for j in range(rev[i] + 1):
            m.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{n}.0.", True))
            if attn:
                m.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{n}.1.", False))
            if j == rev[i] and i < levels - 1:
                slot = 2 if attn else 1
                m.append(
                    (f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{n}.{slot}.conv.", False)
                )
            n += 1
    return m


def _rename(key: str, table: list[tuple[str, str, bool]], sub: dict[str, str]) -> str | None:
    for src, dst, is_resnet in table:
        if key.startswith(src):
            rest = key[len(src) :]
            if is_resnet:
                for a, b in sub.items():
                    if rest.startswith(a + "."):
                        return dst + b + rest[len(a) :]
                return None
            return dst + rest
    return None


def _tables(config: Mapping[str, Any]):
    fwd = _module_map(config)
    # longest prefix first so "input_blocks.3.0.op." wins over a shorter prefix
    fwd_sorted = sorted(fwd, key=lambda t: -len(t[0]))
    rev_sorted = sorted(((b, a, r) for a, b, r in fwd), key=lambda t: -len(t[0]))
    return fwd_sorted, rev_sorted


def _config_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


@lru_cache(maxsize=8)
def _keys_for(config_json: str) -> tuple[str, ...]:
    from diffusers import UNet2DConditionModel

    cfg = json.loads(config_json)
    with torch.device("meta"):
        model = UNet2DConditionModel(**cfg)
    return tuple(model.state_dict().keys())


def _list(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _rename_keys(keys: Iterable[str], table, resnets) -> tuple[dict[str, str], list[str]]:
    """({key: renamed key}, [keys the table has no rule for]), in the order given."""
    renamed: dict[str, str] = {}
    unmapped = []
    for k in keys:
        v = _rename(k, table, resnets)
        if v is None:
            unmapped.append(k)
        else:
            renamed[k] = v
    return renamed, unmapped


def unet_diffusers_to_ldm_keys(config: Mapping[str, Any]) -> dict[str, str]:
    """Map every diffusers state-dict key of a UNet built from ``config`` to its LDM key.

    The UNet is instantiated on the meta device (no memory) to list its keys; the result is
    checked to be a bijection.
    """
    cfg = _config_kwargs(config)
    keys = _keys_for(json.dumps(cfg, sort_keys=True, default=list))
    fwd, _ = _tables(cfg)
    out, unmapped = _rename_keys(keys, fwd, _RESNET_TO_LDM)
    if unmapped:
        raise ModelError(f"UNet keys without an LDM equivalent: {_list(unmapped)}")
    if len(set(out.values())) != len(out):
        raise ModelError("internal error: diffusers -> LDM UNet key map is not one-to-one")
    return out


def _rename_all(sd: Mapping[str, torch.Tensor], table, resnets, problem: str) -> StateDict:
    renamed, bad = _rename_keys(sd, table, resnets)
    if bad:
        raise CheckpointError(problem.format(n=len(bad), keys=_list(bad)))
    return {renamed[k]: t for k, t in sd.items()}


def unet_to_ldm(sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> StateDict:
    """Rename a diffusers-layout UNet state dict to the LDM layout (bare keys, no prefix)."""
    fwd, _ = _tables(_config_kwargs(config))
    return _rename_all(
        sd,
        fwd,
        _RESNET_TO_LDM,
        "UNet weights have {n} keys that are not part of an SD-style diffusers UNet ({keys}): "
        "pass a diffusers UNet2DConditionModel state dict",
    )


def strip_ldm_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``model.diffusion_model.`` prefix of full LDM checkpoints, if present."""
    if any(k.startswith(LDM_PREFIX) for k in sd):
        return {k[len(LDM_PREFIX) :]: v for k, v in sd.items() if k.startswith(LDM_PREFIX)}
    return dict(sd)


def unet_from_ldm(sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> StateDict:
    """Rename an LDM-layout UNet state dict (bare or ``model.diffusion_model.``) to diffusers."""
    _, rev = _tables(_config_kwargs(config))
    return _rename_all(
        strip_ldm_prefix(sd),
        rev,
        _RESNET_FROM_LDM,
        "LDM UNet weights have {n} keys this converter does not know ({keys}): pass an "
        "SD1.x-style LDM UNet (input_blocks/middle_block/output_blocks)",
    )
