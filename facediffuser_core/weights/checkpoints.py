"""The Face-diffuser checkpoint's parts: which keys belong to which model, their canonical
layout, key checks, and loading a published file or a converted set as parts.

The published SDM/TDM files are pickled ``pytorch_model.bin`` state dicts of a whole
training module (read by :mod:`.reading`); :mod:`.conversion` writes them once as a
"converted set" of safetensors files in the layouts ComfyUI's stock loaders read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..catalog import HF_REPO, PART_FILES, PUBLISHED_NAMES, SUBJECT_PARTS  # noqa: F401
from ..errors import CheckpointError
from .reading import (
    _HF_HINT,
    MappedFile,
    StateDict,
    _is_safetensors,
    _names,
    read_mapped,
    read_safetensors_metadata,
    refuse_non_weights,
)

PART_PREFIXES = {
    "unet.": "unet",
    "vae.": "vae",
    "text_encoder.": "text_encoder",
    "image_encoder.": "image_encoder",
    "postfuse_module.": "postfuse",
}
FORMAT_VERSION = "1"
CHUNK_BYTES = 64 * 2**20  # tensors read and handed to a module at a time
# --------------------------------------------------------------------------- parts


def split_published(sd: Mapping[str, torch.Tensor]) -> dict[str, StateDict]:
    """Split a published-layout state dict into parts by ``PART_PREFIXES`` (prefixes removed)."""
    parts: dict[str, StateDict] = {}
    foreign = []
    for k, t in sd.items():
        for prefix, part in PART_PREFIXES.items():
            if k.startswith(prefix):
                parts.setdefault(part, {})[k[len(prefix) :]] = t
                break
        else:
            foreign.append(k)
    if foreign:
        raise CheckpointError(
            f"the checkpoint has {len(foreign)} keys outside the Face-diffuser parts "
            f"({', '.join(PART_PREFIXES)}): {_names(foreign)}. Pass the SDM or TDM "
            f"pytorch_model.bin of {HF_REPO} (or a set made by the converter)"
        )
    return parts


_LEGACY_VAE_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def canonicalize_part(part: str, sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Bring one part to the layout the torch modules load.

    Text encoder: drops ``text_model.`` and the ``position_ids`` buffer older transformers saved.
    Image encoder: drops ``position_ids``. VAE: renames the pre-0.17 diffusers attention names
    (``query``/``key``/``value``/``proj_attn``) and squeezes 1x1-conv attention weights.
    """
    out = dict(sd)
    if part == "text_encoder":
        if any(k.startswith("text_model.") for k in out):
            out = {k.removeprefix("text_model."): v for k, v in out.items()}
        out.pop("embeddings.position_ids", None)
    elif part == "image_encoder":
        out.pop("vision_model.embeddings.position_ids", None)
    elif part == "vae":
        renamed = {}
        for k, v in out.items():
            pieces = k.split(".")
            legacy = len(pieces) >= 2 and pieces[-2] in _LEGACY_VAE_ATTN
            if ".mid_block.attentions." in k and legacy:
                pieces[-2] = _LEGACY_VAE_ATTN[pieces[-2]]
                k = ".".join(pieces)
            if ".mid_block.attentions." in k and v.ndim == 4 and v.shape[-2:] == (1, 1):
                v = v[:, :, 0, 0]
            renamed[k] = v
        out = renamed
    elif part == "unet":
        from .ldm import strip_ldm_prefix

        out = strip_ldm_prefix(out)
    return out


@dataclass
class KeyReport:
    """Missing, unexpected and mis-shaped keys of one part against what its module needs."""

    part: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[str] = field(default_factory=list)  # "key (file shape, expected shape)"
    source: str = ""  # the file or set the part came from, for the message

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected and not self.mis_shaped

    def raise_for_problems(self) -> None:
        """CheckpointError naming the file, the part and the first offending keys, if any."""
        if self.ok:
            return
        problems = []
        if self.missing:
            problems.append(f"{len(self.missing)} missing: {_names(self.missing)}")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected: {_names(self.unexpected)}")
        if self.mis_shaped:
            problems.append(f"{len(self.mis_shaped)} mis-shaped: {_names(self.mis_shaped, 5)}")
        where = f" in {self.source}" if self.source else ""
        raise CheckpointError(
            f"the {self.part} weights{where} do not match the {self.part} architecture "
            f"({'; '.join(problems)}). The file is incomplete, damaged or from another model: "
            f"{_HF_HINT}, or re-run the converter"
        )


def check_keys(
    part: str, sd: Mapping[str, Any], module_or_expected_keys: Any, source: str = ""
) -> KeyReport:
    """Compare a state dict with a module's state dict (names and shapes) or a list of names."""
    shapes: dict[str, tuple] = {}
    if isinstance(module_or_expected_keys, torch.nn.Module):
        state = module_or_expected_keys.state_dict()
        expected = list(state.keys())
        shapes = {k: tuple(v.shape) for k, v in state.items()}
    else:
        expected = list(module_or_expected_keys)
    have = set(sd.keys())
    want = set(expected)
    mis_shaped = [
        f"{k} {tuple(sd[k].shape)} (expected {shapes[k]})"
        for k in expected
        if k in have and k in shapes and hasattr(sd[k], "shape") and tuple(sd[k].shape) != shapes[k]
    ]
    return KeyReport(
        part=part,
        missing=[k for k in expected if k not in have],
        unexpected=sorted(k for k in sd.keys() if k not in want),
        mis_shaped=mis_shaped,
        source=source,
    )


@dataclass
class CheckpointParts:
    """The parts of one SDM or TDM checkpoint, each in its canonical (module) layout.

    The tensors are views of the mapped files (``files``): nothing is read until used. A
    loader takes each tensor through :meth:`fresh`, which reads it in the dtype the model
    keeps, so loading never holds the file's bytes and the model's weights together.
    """

    kind: str
    parts: dict[str, StateDict]
    source: str = ""  # the published file or converted-set folder they were read from
    files: tuple[MappedFile, ...] = ()

    def fresh(
        self,
        tensor: torch.Tensor,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """``tensor`` in memory of its own: read from its file (one tensor at a time), cast
        to ``dtype`` when floating, on ``device``. A tensor not from the files is cast only."""
        for mapped in self.files:
            if mapped.holds(tensor):
                tensor = mapped.read(tensor, dtype)
                break
        else:
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
        return tensor if device is None else tensor.to(device)

    def load_in_chunks(
        self,
        load: Callable[[dict[str, torch.Tensor]], Any],
        tensors: Mapping[str, torch.Tensor],
        dtype: torch.dtype | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> tuple[list[str], list[str]]:
        """Feed ``tensors`` to ``load`` (a non-strict ``load_state_dict``) a chunk at a time,
        each tensor read by :meth:`fresh`: the module keeps its copy and the chunk is dropped,
        so memory holds the module plus one chunk. Returns the keys the module missed in every
        chunk and those it did not expect in any, as ``load_state_dict`` would for all at once.
        """
        missing: set[str] | None = None
        unexpected: set[str] = set()
        chunk: dict[str, torch.Tensor] = {}
        size = 0
        for i, (key, tensor) in enumerate(tensors.items()):
            chunk[key] = self.fresh(tensor, dtype)
            size += chunk[key].numel() * chunk[key].element_size()
            if size >= chunk_bytes or i == len(tensors) - 1:
                result = load(chunk)
                missing = set(result[0]) if missing is None else missing & set(result[0])
                unexpected |= set(result[1])
                chunk, size = {}, 0
        if missing is None:  # nothing to load: what the module misses is everything
            missing = set(load({})[0])
        return sorted(missing), sorted(unexpected)


def _kind_of(parts: Mapping[str, Any], source: Path) -> str:
    for required in ("unet", "vae"):
        if required not in parts:
            raise CheckpointError(
                f"{source} has no {required} weights: a Face-diffuser checkpoint holds unet., vae. "
                f"and text_encoder. keys; {_HF_HINT}"
            )
    present = [p for p in SUBJECT_PARTS if p in parts]
    if len(present) == 1:
        missing = next(p for p in SUBJECT_PARTS if p not in parts)
        raise CheckpointError(
            f"{source} has {present[0]} weights but no {missing} weights: an SDM needs both; "
            f"{_HF_HINT}"
        )
    if present and "text_encoder" not in parts:
        raise CheckpointError(
            f"{source} is an SDM without text_encoder weights, which its subject conditioning "
            f"needs: {_HF_HINT}"
        )
    return "sdm" if present else "tdm"


def _load_converted(folder: Path) -> CheckpointParts:
    from .configs import unet_config_from_ldm
    from .ldm import unet_from_ldm

    parts: dict[str, StateDict] = {}
    files = []
    kinds = set()
    for part, name in PART_FILES.items():
        f = folder / name
        if not f.is_file():
            continue
        meta = read_safetensors_metadata(f)
        if meta.get("facediffuser_kind"):
            kinds.add(meta["facediffuser_kind"])
        if meta.get("facediffuser_part", part) != part:
            raise CheckpointError(
                f"{f} says it holds the {meta['facediffuser_part']} part, not {part}: the "
                "converted set was mixed up; re-run the converter into an empty folder"
            )
        sd, mapped = read_mapped(f)
        files += [mapped] if mapped is not None else []
        if part == "unet":
            sd = unet_from_ldm(sd, unet_config_from_ldm(sd))
        parts[part] = canonicalize_part(part, sd)
    kind = _kind_of(parts, folder)
    if len(kinds) > 1 or (kinds and kind not in kinds):
        raise CheckpointError(
            f"the converted set in {folder} mixes files of kinds {sorted(kinds | {kind})}: "
            "re-run the converter into an empty folder"
        )
    return CheckpointParts(kind=kind, parts=parts, source=str(folder), files=tuple(files))


def _published_file(folder: Path) -> Path | None:
    for name in PUBLISHED_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def load_parts(path: str | os.PathLike) -> CheckpointParts:
    """Load an SDM/TDM from a published file (or its folder) or a converted-set folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / PART_FILES["unet"]).is_file():
            return _load_converted(p)
        published = _published_file(p)
        if published is None:
            raise CheckpointError(
                f"{p} holds neither a converted set (unet.safetensors, vae.safetensors, ...) nor "
                f"a published {PUBLISHED_NAMES[0]}: point to the SDM/ or TDM/ folder of "
                f"{HF_REPO} or to a folder written by the converter"
            )
        p = published
    if p.is_file():
        refuse_non_weights(p)
    if p.is_file() and _is_safetensors(p):
        meta = read_safetensors_metadata(p)
        if "facediffuser_part" in meta:
            raise CheckpointError(
                f"{p} is the {meta['facediffuser_part']} file of a converted set: pass the "
                f"folder {p.parent} instead"
            )
    sd, mapped = read_mapped(p)
    parts = {k: canonicalize_part(k, v) for k, v in split_published(sd).items()}
    files = (mapped,) if mapped is not None else ()
    return CheckpointParts(kind=_kind_of(parts, p), parts=parts, source=str(p), files=files)
