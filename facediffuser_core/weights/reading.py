"""Reading weight files safely: safetensors, or pickles only through
``torch.load(weights_only=True)``; anything needing arbitrary unpickling is refused unrun.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..catalog import HF_REPO
from ..errors import CheckpointError
from ..files import not_weights_reason

_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_HF_HINT = f"download it again from the {HF_REPO} repository on the Hugging Face hub"

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
            f"{HF_REPO} (or its folder, or a converted set)"
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
            f"{HF_REPO})"
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
