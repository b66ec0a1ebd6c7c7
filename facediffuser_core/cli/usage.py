"""Command-line mistakes found before anything slow: device, output folder, numbers, paths.

Each check raises an ``InputError`` whose one line names the option, what is wrong with it
and the fix; the CLI prints it without a traceback. None of them loads a model.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

from ..errors import InputError

# the packages the engine imports, by import name -> distribution name
RUNTIME_PACKAGES = {
    "torch": "torch",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "safetensors": "safetensors",
    "tqdm": "tqdm",
    "numpy": "numpy",
    "PIL": "pillow",
}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda)(:(\d+))?$")


def missing_package_message(module: str) -> str | None:
    """The one-line fix for ``ModuleNotFoundError`` of a runtime package, None for others."""
    top = module.split(".")[0]
    if top not in RUNTIME_PACKAGES and top not in ("insightface", "onnxruntime", "onnx"):
        return None
    dist = RUNTIME_PACKAGES.get(top, top)
    python = sys.executable or "python"
    return (
        f"the Python package {dist!r} is not installed in {python}: install the pack's "
        f"requirements with that python ({python} -m pip install -r requirements.txt in the "
        f"pack's folder, or {python} -m pip install {dist}); '{python} -m facediffuser_core "
        "doctor' checks every dependency"
    )


def require_packages(*modules: str) -> None:
    """InputError naming the first of ``modules`` that cannot be imported, and the fix."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise InputError(missing_package_message(module) or f"{module} is not installed")


def resolve_device(device: str) -> str:
    """``auto`` -> cuda or cpu; InputError for a device this torch cannot use."""
    match = _DEVICE.match(device.strip().lower())
    if not match:
        raise InputError(
            f"--device {device!r} is not a device: use auto, cpu, cuda, cuda:N (N = GPU index) "
            "or mps"
        )
    import torch

    kind, index = match.group(1), match.group(3)
    if kind == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = torch.__version__
            why = "is a CPU-only build" if torch.version.cuda is None else "sees no usable GPU"
            raise InputError(
                f"--device {device}: this torch ({build}) {why}: use --device cpu (or auto), "
                "or install a CUDA build of torch (facediffuser doctor prints the command)"
            )
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise InputError(
                f"--device {device}: there are {count} CUDA device(s), numbered 0 to "
                f"{count - 1}: use one of those"
            )
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            raise InputError(
                f"--device {device}: Apple's MPS is not available in this torch/machine: use "
                "--device cpu (or auto)"
            )
    return device.strip().lower()


def check_out_folder(out: str | os.PathLike, option: str = "--out") -> Path:
    """The output folder must be a folder (or creatable) and writable, before any work."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(
            f"{option} {path} is an existing file, but {option} names a folder (the files are "
            f"written into it and never overwritten): give a folder, e.g. {option} "
            f"{path.with_suffix('')}-out"
        )
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(
            f"{option} {path}: {existing} is a file, so the folder cannot be created there: "
            "choose another folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(
            f"{option} {path}: {existing} is not writable for this user: choose a folder you "
            "can write to"
        )
    return path


def check_at_least(option: str, value: float | None, low: float, fix: str) -> None:
    if value is not None and value < low:
        raise InputError(f"{option} {value:g} is too small: it must be at least {low:g}; {fix}")


def check_in_range(option: str, value: float | None, name: str, fix: str) -> None:
    """InputError unless ``value`` is within the range the nodes give input ``name``
    (:data:`facediffuser_core.ranges.NUMBERS`, one table for every front end)."""
    from ..ranges import NUMBERS

    spec = NUMBERS[name]
    check_at_least(option, value, spec["min"], fix)
    if value is not None and value > spec["max"]:
        high = "2^64-1" if spec["max"] == 0xFFFFFFFFFFFFFFFF else f"{spec['max']:g}"
        raise InputError(f"{option} {value:g} is too large: it must be at most {high}; {fix}")


def check_tokenizer_folder(tokenizer: str | os.PathLike) -> Path:
    path = Path(tokenizer).expanduser()
    if not path.is_dir():
        raise InputError(
            f"--tokenizer {path} is not a folder: give the tokenizer/ folder (vocab.json + "
            "merges.txt) of runwayml/stable-diffusion-v1-5"
        )
    missing = [n for n in ("vocab.json", "merges.txt") if not (path / n).is_file()]
    if missing:
        raise InputError(
            f"--tokenizer {path} has no {' or '.join(missing)}: give the tokenizer/ folder "
            "(vocab.json + merges.txt) of runwayml/stable-diffusion-v1-5"
        )
    return path


def least_steps_with_fusion(steps: int) -> int:
    """The smallest step count above ``steps`` whose default stage boundaries (the paper's
    15/30 of 50, scaled) leave at least one fusion step."""
    from ..engine.stages import PAPER_BOUNDARIES, Stage

    return next(
        n
        for n in range(steps + 1, steps + 1000)
        if PAPER_BOUNDARIES.scaled_to(n).counts()[Stage.FUSION]
    )


def check_default_fusion(steps: int) -> None:
    """InputError when the default boundaries for ``steps`` leave no fusion (SNF) step."""
    from ..engine.stages import PAPER_BOUNDARIES, Stage

    scaled = PAPER_BOUNDARIES.scaled_to(steps)
    start, final = scaled.start_merge_step, scaled.final_step
    if scaled.counts()[Stage.FUSION] == 0:
        raise InputError(
            f"--steps {steps} leaves no fusion step (SNF never runs: the paper's stage "
            f"boundaries scale to scene steps up to {start} and fusion up to {final}): use "
            f"--steps {least_steps_with_fusion(steps)} or more"
        )
