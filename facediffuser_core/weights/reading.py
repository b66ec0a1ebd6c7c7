"""Reading weight files safely: safetensors, or pickles only through
``torch.load(weights_only=True)``; anything needing arbitrary unpickling is refused unrun.

Files are mapped, not read (:class:`MappedFile`): a loader reads each tensor when it needs it,
in the dtype it needs, so loading never holds the file and the model in memory together.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
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


# --------------------------------------------------------------------------- mapped files


@dataclass(eq=False)
class MappedFile:
    """A weights file mapped into memory but not read: its tensors are views of the mapping.

    A view's pages are read from disk only when something touches them, and then count as
    the process's memory for as long as the mapping lives. :meth:`read` therefore copies a
    view's bytes with ordinary file reads instead (the operating system's file cache, not
    the process, holds them): converting a model to another dtype or device then never keeps
    the source resident beside the result.
    """

    path: Path
    storage: torch.UntypedStorage = field(repr=False)  # the whole file, mapped

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` is a view into this file's mapping."""
        if tensor.device.type != "cpu" or tensor.numel() == 0:
            return False
        base = self.storage.data_ptr()
        return base <= tensor.data_ptr() < base + self.storage.nbytes()

    def read(self, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A fresh contiguous copy of the view ``tensor``, read from the file, cast to
        ``dtype`` when floating (one tensor of extra memory while it is cast)."""
        size = tensor.element_size()
        span = 1 + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride(), strict=True))
        buf = torch.empty(span * size, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(tensor.data_ptr() - self.storage.data_ptr())
            if f.readinto(memoryview(buf.numpy())) != span * size:
                raise CheckpointError(f"{self.path} is truncated: {_HF_HINT}")
        flat = buf.view(tensor.dtype)
        if tensor.is_contiguous():
            out = flat.view(tensor.shape)
        else:
            out = flat.as_strided(tensor.shape, tensor.stride()).contiguous()
        if dtype is not None and out.is_floating_point() and dtype != out.dtype:
            out = out.to(dtype)
        return out


def _view(
    storage: torch.UntypedStorage, start: int, nbytes: int, like: torch.Tensor
) -> torch.Tensor:
    """A tensor shaped like ``like`` on ``nbytes`` of ``storage`` from byte ``start``."""
    if like.numel() == 0:
        return torch.empty(like.shape, dtype=like.dtype)
    part = storage[start : start + nbytes]
    return torch.empty(0, dtype=like.dtype).set_(
        part, like.storage_offset(), like.shape, like.stride()
    )


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _map_safetensors(path: Path) -> tuple[dict[str, Any], MappedFile] | None:
    """Views of a (validated) safetensors file; None for dtypes this mapping does not know."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size)
    out = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            return None
        begin, end = entry["data_offsets"]
        like = torch.empty(entry["shape"], dtype=dtype, device="meta")
        out[key] = _view(storage, 8 + length + begin, end - begin, like)
    return out, MappedFile(path, storage)


def _read_safetensors(path: Path) -> tuple[dict[str, Any], MappedFile | None]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt", device="cpu"):
            pass  # validates the header against the file
        return _map_safetensors(path) or (load_file(str(path), device="cpu"), None)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is truncated or not a safetensors file ({type(exc).__name__}: {exc}): "
            "re-run the converter or download the file again"
        ) from exc


def _unwrap(obj: Any) -> Any:
    for wrapper in ("state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    return obj


def _record_sizes(path: Path) -> dict[int, int]:
    """{offset of the bytes: size} of each stored record of a zip file (``data/<key>``)."""
    sizes = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            if "/data/" not in f"/{info.filename}" or info.compress_type != zipfile.ZIP_STORED:
                continue
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            sizes[info.header_offset + 30 + name_len + extra_len] = info.file_size
    return sizes


def _map_torch(path: Path) -> tuple[Any, MappedFile | None]:
    """Views of a zip-format torch file: the pickle is read on the meta device (weights only,
    no tensor bytes read), which tells each storage's offset in the file (checked against the
    archive's records). Legacy files are read whole; files whose records cannot be located
    are mapped by torch itself (correct, but then without :meth:`MappedFile.read`)."""
    if not zipfile.is_zipfile(path):
        return torch.load(str(path), map_location="cpu", weights_only=True), None
    meta = _unwrap(torch.load(str(path), map_location="meta", weights_only=True))
    if not isinstance(meta, dict):
        return meta, None
    records = _record_sizes(path)
    for like in meta.values():
        where = like.untyped_storage() if torch.is_tensor(like) else None
        offset = getattr(where, "_checkpoint_offset", None)
        if where is not None and records.get(offset) != where.nbytes():
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True), None
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size)
    out = {}
    for key, like in meta.items():
        if not torch.is_tensor(like):  # reported by read_mapped's checks
            out[key] = like
            continue
        where = like.untyped_storage()
        out[key] = _view(storage, where._checkpoint_offset, where.nbytes(), like)
    return out, MappedFile(path, storage)


def _read_torch(path: Path) -> tuple[Any, MappedFile | None]:
    try:
        return _map_torch(path)
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


def read_mapped(path: str | os.PathLike) -> tuple[StateDict, MappedFile | None]:
    """A state dict of .bin/.pt/.pth/.ckpt (weights only) or .safetensors, and its mapping.

    The tensors are views of the file mapped into memory (nothing is read until touched;
    read them into memory with :meth:`MappedFile.read`). Unwraps a top-level
    ``state_dict``/``module`` entry. CheckpointError for missing, truncated, corrupt or
    pickle-carrying files and for non-tensor values. The mapping is None for files that
    cannot be mapped (legacy torch files), whose tensors are then ordinary ones.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint file {p} does not exist: check the path (for the published models, "
            "download SDM/pytorch_model.bin and TDM/pytorch_model.bin from "
            f"{HF_REPO})"
        )
    refuse_non_weights(p)
    obj, mapped = _read_safetensors(p) if _is_safetensors(p) else _read_torch(p)
    obj = _unwrap(obj)
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
    return obj, mapped


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """The state dict of :func:`read_mapped` (views of the mapped file, read when touched)."""
    return read_mapped(path)[0]
