"""Memory and time of writing, converting and loading the weights, one measurement per process.

``benchmarks/run.py --modes memory`` starts this script once per measurement (a process's
peak RSS is its own high-water mark), and reads the JSON line it prints:

    python benchmarks/memory.py write DIR [--dtype published] [--tiny]   facediffuser tiny
    python benchmarks/memory.py convert SRC OUT [--dtype fp16]            facediffuser convert
    python benchmarks/memory.py load SDM TDM [--dtype fp32]               the CLI's load_models

Sizes are bytes, times seconds. Library imports happen before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from measure import peak_rss, rss  # noqa: E402


def _import_libraries() -> None:
    """What loading imports on first use (seconds on a busy machine), before the clock."""
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection  # noqa: F401


def files_bytes(path: Path) -> int:
    files = [path] if path.is_file() else path.rglob("*")
    return sum(f.stat().st_size for f in files if f.is_file())


def write(args) -> dict:
    from facediffuser_core.cli import main

    _import_libraries()
    before, t0 = rss(), time.perf_counter()
    extra = [] if args.tiny else ["--full-size", "--dtype", args.dtype]
    code = main(["tiny", str(args.out), *extra])
    seconds = time.perf_counter() - t0
    written = sum(files_bytes(args.out / kind) for kind in ("SDM", "TDM"))
    return {"code": code, "seconds": seconds, "rss_before": before, "peak_rss": peak_rss(),
            "bytes": written}  # fmt: skip


def convert(args) -> dict:
    from facediffuser_core.cli import main

    before, t0 = rss(), time.perf_counter()
    code = main(["convert", str(args.src), str(args.out), "--dtype", args.dtype, "--no-progress",
                 "--force"])  # fmt: skip
    return {"code": code, "seconds": time.perf_counter() - t0, "rss_before": before,
            "peak_rss": peak_rss(), "source_bytes": files_bytes(args.src)}  # fmt: skip


def module_bytes(models) -> int:
    """Bytes of the weights a :class:`FaceDiffuserModels` keeps, each tensor once."""
    seen, total = set(), 0
    for module in (models.unet, models.vae, models.text_encoder, models.subject_encoder):
        if module is None:
            continue
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
    return total


def load(args) -> dict:
    import torch

    from facediffuser_core.weights.models import load_models

    _import_libraries()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    before, t0 = rss(), time.perf_counter()
    models = [load_models(p, device=args.device, dtype=dtype) for p in (args.sdm, args.tdm)]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_before": before, "peak_rss": peak_rss(),
            "weight_bytes": sum(module_bytes(m) for m in models),
            "source_bytes": files_bytes(args.sdm) + files_bytes(args.tdm)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("write", help="facediffuser tiny [--full-size --dtype D] OUT")
    w.add_argument("out", type=Path)
    w.add_argument("--dtype", default="published")
    w.add_argument("--tiny", action="store_true", help="the tiny set (for the tests)")
    c = commands.add_parser("convert", help="facediffuser convert SRC OUT --dtype D")
    c.add_argument("src", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--dtype", default="fp16")
    ld = commands.add_parser("load", help="load_models(SDM), load_models(TDM)")
    ld.add_argument("sdm", type=Path)
    ld.add_argument("tdm", type=Path)
    ld.add_argument("--dtype", default="fp32")
    ld.add_argument("--device", default="cpu")
    args = parser.parse_args()
    result = {"write": write, "convert": convert, "load": load}[args.command](args)
    print(json.dumps({args.command: result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
