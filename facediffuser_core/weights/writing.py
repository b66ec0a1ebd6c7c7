"""Writing weight files one tensor at a time: torch's zip pickle (``.bin``) and safetensors.

A state dict of SD1.5 size holds 2-5 GB. ``torch.save`` needs every tensor in memory at
once, and ``safetensors.torch.save_file`` also copies each one to ``bytes`` first: writing
would cost the weights' size once or twice more. Both formats keep a small header (the
pickle, the JSON) apart from the tensor bytes, so here the header is written from the
tensors' shapes and dtypes alone (:class:`TensorSpec`) and each tensor is then made, written
and dropped in turn: memory holds one tensor at a time. The files are the formats' own
(``torch.load`` and ``safetensors`` read them; tests compare them with their writers').
Each file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import collections
import json
import math
import os
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files import ordinary_permissions


@dataclass(frozen=True)
class TensorSpec:
    """What a file will hold under one key: shape and dtype (contiguous)."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> TensorSpec:
        """The spec of ``tensor`` (works on the meta device), cast to ``dtype`` if floating."""
        cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        return cls(tuple(tensor.shape), cast)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _checked(key: str, tensor: torch.Tensor, spec: TensorSpec) -> torch.Tensor:
    """``tensor`` on the CPU, contiguous, owning exactly its bytes; ValueError if off-spec."""
    if tuple(tensor.shape) != spec.shape or tensor.dtype != spec.dtype:
        raise ValueError(
            f"{key}: got {tuple(tensor.shape)} {tensor.dtype}, announced {spec.shape} {spec.dtype}"
        )
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.storage_offset() or tensor.untyped_storage().nbytes() != spec.nbytes:
        tensor = tensor.clone()
    return tensor


def _atomic(path: Path, write: Callable[[object], None]) -> Path:
    """Run ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        ordinary_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------- torch (.bin)

_STORAGE_TYPES = {
    torch.float64: "DoubleStorage",
    torch.float32: "FloatStorage",
    torch.float16: "HalfStorage",
    torch.bfloat16: "BFloat16Storage",
    torch.int64: "LongStorage",
    torch.int32: "IntStorage",
    torch.int16: "ShortStorage",
    torch.int8: "CharStorage",
    torch.uint8: "ByteStorage",
    torch.bool: "BoolStorage",
}


class _StorageRef:
    """A tensor's storage in the archive (record ``data/<key>``), as the pickle refers to it."""

    def __init__(self, key: str, spec: TensorSpec):
        self.key, self.spec = key, spec


class _TensorRef:
    """Pickles exactly as a contiguous CPU tensor does, without having its data."""

    def __init__(self, storage: _StorageRef):
        self.storage = storage

    def __reduce_ex__(self, protocol):
        shape = self.storage.spec.shape
        stride = tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))
        args = (self.storage, 0, shape, stride, False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


def _state_dict_pickle(specs: Mapping[str, TensorSpec]) -> tuple[bytes, dict[str, str]]:
    """``data.pkl`` of ``torch.save(state_dict)`` and the record name of each key."""
    import io
    import pickle

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, _StorageRef):
                return None
            storage_type = getattr(torch, _STORAGE_TYPES[obj.spec.dtype])
            numel = math.prod(obj.spec.shape)
            return ("storage", storage_type, obj.key, "cpu", numel)

    refs = {k: _TensorRef(_StorageRef(str(i), spec)) for i, (k, spec) in enumerate(specs.items())}
    buf = io.BytesIO()
    Pickler(buf, protocol=torch.serialization.DEFAULT_PROTOCOL).dump(refs)
    return buf.getvalue(), {k: f"data/{ref.storage.key}" for k, ref in refs.items()}


def write_torch_file(
    path: str | os.PathLike,
    specs: Mapping[str, TensorSpec],
    tensors: Iterable[tuple[str, torch.Tensor]],
) -> Path:
    """A state dict file as ``torch.save`` writes it (zip format), one tensor at a time.

    ``specs`` gives every key's shape and dtype in the state dict's order; ``tensors`` then
    yields ``(key, tensor)`` in that same order (the records follow it, as torch.save's do).
    ValueError if a tensor is off its spec, out of order or missing (no file is left then).
    """
    for spec in specs.values():
        if spec.dtype not in _STORAGE_TYPES:
            raise ValueError(f"cannot write {spec.dtype} tensors to a torch file")
    pickled, records = _state_dict_pickle(specs)

    def write(f) -> None:
        archive = torch._C.PyTorchFileWriter(f)  # the writer torch.save uses
        try:
            archive.write_record("data.pkl", pickled, len(pickled))
            archive.write_record(".format_version", "1", 1)
            alignment = "64"
            archive.write_record(".storage_alignment", alignment, len(alignment))
            archive.write_record("byteorder", sys.byteorder, len(sys.byteorder))
            expected = iter(specs)
            for key, tensor in tensors:
                if key != next(expected, None):
                    raise ValueError(f"{key}: not announced, or out of the announced order")
                tensor = _checked(key, tensor, specs[key])
                archive.write_record(records[key], tensor.untyped_storage(), specs[key].nbytes)
                del tensor
            missing = next(expected, None)
            if missing is not None:
                raise ValueError(f"no tensor was given for {missing} (and any after it)")
        finally:  # also on errors: an unfinished writer aborts the process when collected
            archive.write_end_of_file()

    return _atomic(Path(path), write)


# --------------------------------------------------------------------------- safetensors

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(
    path: str | os.PathLike,
    specs: Mapping[str, TensorSpec],
    produce: Callable[[str], torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """A .safetensors file, each tensor made by ``produce(key)`` just before it is written.

    Tensors are laid out widest dtype first (as safetensors does), so every tensor starts at
    a multiple of its element size for readers that map the file.
    """
    order = sorted(specs, key=lambda k: -specs[k].dtype.itemsize)  # stable: ties keep order
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for key in order:
        spec = specs[key]
        if spec.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"cannot write {spec.dtype} tensors to a safetensors file")
        header[key] = {
            "dtype": SAFETENSORS_DTYPES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)

    def write(f) -> None:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key in order:
            tensor = _checked(key, produce(key), specs[key])
            if tensor.numel():
                f.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
            del tensor

    return _atomic(Path(path), write)
