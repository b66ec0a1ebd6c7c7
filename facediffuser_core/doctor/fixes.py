"""The exact commands a fix names: pip for this interpreter, quoting per shell, torch and
onnxruntime installs, sizes and paths as the user sees them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from .report import ORT_CPU, ORT_GPU, TORCH_CUDA_INDEX, Environment

# --------------------------------------------------------------------------- helpers


def _version_tuple(version: str | None) -> tuple[int, ...]:
    numbers = []
    for part in (version or "").split("+")[0].split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def _quote(text: str, windows: bool) -> str:
    if windows:
        return f'"{text}"' if re.search(r"[\s&()^%!]", text) else text
    return shlex.quote(text)


def _pip(env: Environment, args: str) -> str:
    return f"{_quote(env.python, env.windows)} -m pip {args}"


def _ort_wanted(env: Environment) -> str:
    """The one onnxruntime flavour this machine should have."""
    if env.nvidia:
        return ORT_GPU
    others = sorted(d for d in env.ort_distributions if d not in (ORT_CPU, ORT_GPU))
    return others[0] if others else ORT_CPU


def _ort_reinstall(env: Environment) -> str:
    extra = sorted(d for d in env.ort_distributions if d not in (ORT_CPU, ORT_GPU))
    remove = " ".join([ORT_CPU, ORT_GPU, *extra])
    return f"{_pip(env, f'uninstall -y {remove}')} && {_pip(env, f'install {_ort_wanted(env)}')}"


def _torch_install(env: Environment) -> str:
    packages = "torch torchvision torchaudio"
    if env.system == "Darwin":
        return f"{_pip(env, f'uninstall -y {packages}')} && {_pip(env, f'install {packages}')}"
    index = TORCH_CUDA_INDEX if env.nvidia else "https://download.pytorch.org/whl/cpu"
    command = (
        f"{_pip(env, f'uninstall -y {packages}')} && "
        f"{_pip(env, f'install {packages} --index-url {index}')}"
    )
    if env.nvidia:
        command += (
            "\n(cu128 = CUDA 12.8 wheels, for a driver that supports CUDA 12.8; other builds: "
            "https://pytorch.org/get-started/locally/)"
        )
    return command


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _files_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _shown(path: Path, models_dir: Path) -> str:
    """A path for a detail text: relative to the models folder's parent when inside it."""
    try:
        return path.relative_to(models_dir.parent).as_posix()
    except ValueError:
        return str(path)
