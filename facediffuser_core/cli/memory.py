"""Will a generation fit in memory? An estimate made before any model is loaded.

The peak of a Face-diffuser run is the weights of both models plus the largest working
set of one step: a batch-of-two UNet call (classifier-free guidance) at the latent size, or
the VAE decoding one image at the full size. Both grow with the pixel count; attention is
assumed to run through PyTorch's memory-efficient scaled-dot-product kernels (diffusers'
default on torch 2), so nothing here is quadratic in the pixel count.

The activation factors are deliberately generous (a refused size that would have fitted
costs a retry at a smaller size; an accepted size that does not fit costs minutes and
then a crash), and the largest size that fits is named in the error.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

# Live tensors per element of the widest activation (input, norm, conv output, skip
# connections of every level, residual). Measured on the CPU in fp32: SD1.5's VAE decoder
# peaks at about 8 (4 KB per pixel at 512 and 768 pixels square), the tiny models far below.
UNET_FACTOR = 12
VAE_FACTOR = 10
SAFETY = 1.25  # allocator slack and fragmentation
OVERHEAD = 512 * 2**20  # torch, the libraries, the text and image encoders' activations


@dataclass(frozen=True)
class Widths:
    """The channel widths that set the activation sizes (SD1.5: 320 and 128)."""

    unet: int = 320
    vae: int = 128
    latent_factor: int = 8


SD15 = Widths()


@dataclass(frozen=True)
class Footprint:
    """What a run's memory depends on besides the image size: the weights of both models
    (elements, :func:`weight_elements`), bytes per element, the models' widths and the images
    made per prompt."""

    weights: int
    element_size: int
    widths: Widths = SD15
    images: int = 1


def weight_elements(paths: Iterable[str | os.PathLike]) -> int:
    """Number of weight elements in model files or converted-set folders, from their sizes.

    safetensors headers and the pickles of torch files (read on the meta device) give exact
    counts (the published ``.bin`` files mix float32 and bfloat16); a file that cannot be read
    so counts as 4 bytes per element. No tensor data is read.
    """
    total = 0
    for path in paths:
        p = Path(path)
        files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p] * p.is_file()
        for f in files:
            if f.suffix == ".safetensors":
                total += _safetensors_elements(f)
            elif f.suffix in (".bin", ".pt", ".pth", ".ckpt"):
                total += _torch_elements(f)
    return total


def _torch_elements(path: Path) -> int:
    import torch

    def count(obj) -> int:
        if torch.is_tensor(obj):
            return obj.numel()
        return sum(count(v) for v in obj.values()) if isinstance(obj, dict) else 0

    try:
        return count(torch.load(str(path), map_location="meta", weights_only=True))
    except Exception:  # unreadable here: the loader will say why; estimate from the size
        return path.stat().st_size // 4


def _safetensors_elements(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
    except (OSError, ValueError, struct.error):
        return path.stat().st_size // 4
    count = 0
    for key, entry in header.items():
        if key != "__metadata__":
            n = 1
            for d in entry.get("shape", []):
                n *= d
            count += n
    return count


def peak_bytes(width: int, height: int, run: Footprint) -> int:
    """Estimated peak bytes of ``run`` at ``width`` x ``height``.

    Per image of the prompt the UNet runs a batch of two (guidance); the VAE decodes all
    images at once.
    """
    widths = run.widths
    latent = (width // widths.latent_factor) * (height // widths.latent_factor)
    unet = 2 * run.images * latent * widths.unet * UNET_FACTOR
    vae = run.images * width * height * widths.vae * VAE_FACTOR
    return int((run.weights + max(unet, vae)) * run.element_size * SAFETY) + OVERHEAD


def available_bytes(device: str) -> int | None:
    """Free memory of ``device`` (RAM for cpu), or None when it cannot be told."""
    if device.startswith("cuda"):
        import torch

        try:
            free, _ = torch.cuda.mem_get_info(torch.device(device))
            return int(free)
        except Exception:
            return None
    if device != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if hasattr(os, "sysconf") and sys.platform != "win32":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def largest_fitting(width: int, height: int, budget: int, run: Footprint) -> tuple[int, int] | None:
    """The largest size with the aspect ratio of ``width`` x ``height`` (multiples of 8)."""
    step = run.widths.latent_factor

    def size(scale: float) -> tuple[int, int]:
        return (
            max(step * 2, int(width * scale) // step * step),
            max(step * 2, int(height * scale) // step * step),
        )

    def fits(wh: tuple[int, int]) -> bool:
        return peak_bytes(*wh, run) <= budget

    if not fits(size(0.0)):
        return None
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        if fits(size(mid)):
            low = mid
        else:
            high = mid
    return size(low)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def check_fits(
    width: int, height: int, run: Footprint, *, device: str, available: int | None = None
) -> None:
    """InputError naming the largest size that fits when ``width`` x ``height`` cannot."""
    budget = available if available is not None else available_bytes(device)
    if budget is None:
        return
    need = peak_bytes(width, height, run)
    if need <= budget:
        return
    where = "free GPU memory" if device.startswith("cuda") else "available RAM"
    best = largest_fitting(width, height, budget, run)
    if best is None:
        fix = "the models alone do not fit: free memory, or use --dtype fp16 on a GPU"
    elif run.images > 1:
        fix = (
            f"use --width {best[0]} --height {best[1]} or smaller (the largest that fits "
            f"{run.images} images), or fewer --num-images"
        )
    else:
        fix = f"use --width {best[0]} --height {best[1]} or smaller (the largest that fits)"
    raise InputError(
        f"--width {width} --height {height} needs about {human(need)} but {device} has "
        f"{human(budget)} of {where}: {fix}"
    )
