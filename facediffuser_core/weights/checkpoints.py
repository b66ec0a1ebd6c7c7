"""Reading the Face-diffuser weights safely, and converting them to a safetensors set.

The published SDM/TDM files are pickled ``pytorch_model.bin`` state dicts of a whole training
module. They are only ever opened with ``torch.load(weights_only=True)``; anything that would
need arbitrary unpickling is refused without running it. ``convert`` writes them once as a
"converted set" of safetensors files in the layouts ComfyUI's stock loaders read.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..files import not_weights_reason, save_safetensors

PART_PREFIXES = {
    "unet.": "unet",
    "vae.": "vae",
    "text_encoder.": "text_encoder",
    "image_encoder.": "image_encoder",
    "postfuse_module.": "postfuse",
}
PART_FILES = {
    "unet": "unet.safetensors",
    "vae": "vae.safetensors",
    "text_encoder": "text_encoder.safetensors",
    "image_encoder": "image_encoder.safetensors",
    "postfuse": "postfuse.safetensors",
}
SUBJECT_PARTS = ("image_encoder", "postfuse")
FORMAT_VERSION = "1"
PUBLISHED_NAMES = ("pytorch_model.bin", "pytorch_model.safetensors", "model.safetensors")
_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_HF_HINT = "download it again from the CodeGoat24/Face-diffuser repository on the Hugging Face hub"

StateDict = dict[str, torch.Tensor]


def _names(keys: Iterable[str], limit: int = 10) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


# --------------------------------------------------------------------------- reading


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    if path.suffix in _TORCH_SUFFIXES:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def refuse_non_weights(path: str | os.PathLike, what: str = "model file") -> None:
    """CheckpointError when ``path`` is recognisably not a weights file."""
    reason = not_weights_reason(path)
    if reason:
        raise CheckpointError(
            f"{path} is {reason}, not a {what}: give the SDM/ or TDM/ pytorch_model.bin of "
            "CodeGoat24/Face-diffuser (or its folder, or a converted set)"
        )


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file ({} if none); CheckpointError if unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointError(
            f"{path} is truncated or not a safetensors file ({exc}): convert or download it again"
        ) from exc


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"{path} is truncated or not a safetensors file ({type(exc).__name__}: {exc}): "
            "re-run the converter or download the file again"
        ) from exc


def _read_torch(path: Path) -> Any:
    def load(mmap: bool) -> Any:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            return load(mmap=True)
        except RuntimeError as exc:
            # mmap only works for the zip format; old-style (legacy) files load without it
            if "mmap" not in str(exc).lower():
                raise
            return load(mmap=False)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            what = f" (it references {found.group(1)})"
            raise CheckpointError(
                f"{path} holds pickled Python objects{what}, refused without running them: only "
                "tensors, numbers and containers are loaded. Use the state-dict file published "
                "with the model, or a safetensors file"
            ) from None
        raise CheckpointError(
            f"{path} is truncated or corrupt (not a readable PyTorch weights file): {_HF_HINT}"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # any parse failure of the bytes means a damaged file
        first = (str(exc).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {first}): {_HF_HINT}"
        ) from exc


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a state dict from .bin/.pt/.pth/.ckpt (weights only) or .safetensors, on the CPU.

    Unwraps a top-level ``state_dict``/``module`` entry. CheckpointError for missing, truncated,
    corrupt or pickle-carrying files and for non-tensor values.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint file {p} does not exist: check the path (for the published models, "
            "download SDM/pytorch_model.bin and TDM/pytorch_model.bin from "
            "CodeGoat24/Face-diffuser)"
        )
    refuse_non_weights(p)
    obj: Any = _read_safetensors(p) if _is_safetensors(p) else _read_torch(p)
    for wrapper in ("state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{p} holds a {type(obj).__name__}, not a state dict of named tensors: "
            "pass a model state-dict file"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(
            f"{p} holds entries that are not tensors ({_names(bad)}): pass a plain state dict "
            "of tensors (the published pytorch_model.bin or a converted set)"
        )
    return obj


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
            "pytorch_model.bin of CodeGoat24/Face-diffuser (or a set made by the converter)"
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
    """The parts of one SDM or TDM checkpoint, each in its canonical (module) layout."""

    kind: str
    parts: dict[str, StateDict]
    source: str = ""  # the published file or converted-set folder they were read from


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
        sd = read_state_dict(f)
        if part == "unet":
            sd = unet_from_ldm(sd, unet_config_from_ldm(sd))
        parts[part] = canonicalize_part(part, sd)
    kind = _kind_of(parts, folder)
    if len(kinds) > 1 or (kinds and kind not in kinds):
        raise CheckpointError(
            f"the converted set in {folder} mixes files of kinds {sorted(kinds | {kind})}: "
            "re-run the converter into an empty folder"
        )
    return CheckpointParts(kind=kind, parts=parts, source=str(folder))


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
                "CodeGoat24/Face-diffuser or to a folder written by the converter"
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
    sd = read_state_dict(p)
    parts = {k: canonicalize_part(k, v) for k, v in split_published(sd).items()}
    return CheckpointParts(kind=_kind_of(parts, p), parts=parts, source=str(p))


# --------------------------------------------------------------------------- conversion


def _file_layout(part: str, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if part == "unet":
        from .configs import unet_config_from_diffusers
        from .ldm import unet_to_ldm

        return unet_to_ldm(sd, unet_config_from_diffusers(sd))
    if part == "text_encoder":
        return {f"text_model.{k}": v for k, v in sd.items()}
    return dict(sd)


def _prepare(sd: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Cast floating tensors, make every tensor contiguous and own its memory."""
    out = {}
    seen: set[int] = set()
    for k, t in sd.items():
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


_atomic_save = save_safetensors


def convert(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    replace: bool = False,
) -> dict[str, Path]:
    """Convert a published SDM/TDM (or a converted set) into a converted set in ``out_dir``.

    Writes unet.safetensors (LDM layout), vae.safetensors (diffusers), text_encoder.safetensors
    (``text_model.`` keys), and for an SDM image_encoder.safetensors and postfuse.safetensors.
    Each file is written atomically (temporary file + rename). An earlier converted set in
    ``out_dir`` is replaced only with ``replace=True`` (the CLI's ``--force``); any other file
    in the way is always refused. Files get ordinary permissions (0666 minus the umask).
    ``dtype`` casts floating tensors only. Returns {part: path}.
    """
    from tqdm.auto import tqdm

    loaded = load_parts(src)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"output {out} exists and is not a folder: choose a folder path")
    out.mkdir(parents=True, exist_ok=True)
    # Files we are about to replace (or that would be stale) must be our own earlier output:
    # nothing the user put there is overwritten. Checked for every file before writing any.
    for name in PART_FILES.values():
        existing = out / name
        if existing.is_file() and "facediffuser_part" not in read_safetensors_metadata(existing):
            raise CheckpointError(
                f"{existing} exists and was not written by this converter: it is not "
                "overwritten; choose an empty folder for the converted set"
            )
    ours = [name for name in PART_FILES.values() if (out / name).is_file()]
    if ours and not replace:
        raise CheckpointError(
            f"{out} already holds a converted set ({', '.join(ours)}): add --force to replace "
            "it, or choose another folder"
        )
    # a stale SDM-only file left from an earlier conversion would turn a TDM set into an SDM one
    for part in SUBJECT_PARTS:
        stale = out / PART_FILES[part]
        if part not in loaded.parts and stale.is_file():
            stale.unlink()
    written: dict[str, Path] = {}
    names = [p for p in PART_FILES if p in loaded.parts]
    for part in tqdm(names, desc="converting", unit="part", disable=not progress):
        tensors = _prepare(_file_layout(part, loaded.parts[part]), dtype)
        metadata = {
            "facediffuser_part": part,
            "facediffuser_kind": loaded.kind,
            "facediffuser_format": FORMAT_VERSION,
        }
        target = out / PART_FILES[part]
        _atomic_save(tensors, target, metadata)
        written[part] = target
    return written
