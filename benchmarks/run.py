"""Face-diffuser benchmarks: one entry point, one table (Markdown on stdout, JSON on request).

Sections (every number is a ratio measured in this run; these machines are noisy):
1. headless loop: sampling wall time / time inside the two UNets, and the SNF share, for
   latent sizes x batch sizes (tiny models; --full-size for SD1.5-shaped random UNets);
2. overlap mode: sequential / overlapped fusion stage, measured alternately;
3. inside ComfyUI (with --comfyui): the pack's SNF KSampler vs the stock KSampler on the same
   model, steps, sampler and size, alternately A B A B, medians and min-max; loop / model time;
4. peak memory (with --comfyui): RSS of one SNF run vs one stock run, each in a fresh process.

    python benchmarks/run.py [--repeats 3] [--json out.json]
    python benchmarks/run.py --comfyui /path/to/ComfyUI --comfy-python /path/to/venv/bin/python
    python benchmarks/run.py --full-size --device cuda --dtype fp16 --latents 64 --batches 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from loop_overhead import one_run  # noqa: E402

from facediffuser_core.engine.sampling import Conditioning  # noqa: E402
from facediffuser_core.weights.models import build_models, load_models  # noqa: E402


def load_pair(full_size: bool, device: str, dtype: torch.dtype):
    """(sdm, tdm) models: the tiny set from its files, or SD1.5-sized random weights."""
    if full_size:
        from facediffuser_core.tiny.diffusion import tiny_state_dicts
        from facediffuser_core.weights.checkpoints import (
            CheckpointParts,
            canonicalize_part,
            split_published,
        )

        dicts = tiny_state_dicts(0, full_size=True, dtype=torch.float16)
        out = []
        for kind in ("sdm", "tdm"):
            parts = {k: canonicalize_part(k, v) for k, v in split_published(dicts[kind]).items()}
            out.append(build_models(CheckpointParts(kind, parts), device=device, dtype=dtype))
        return out
    from facediffuser_core.tiny.diffusion import write_tiny_set

    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny_set(Path(tmp), seed=0)
        return [load_models(p, device=device, dtype=dtype) for p in (tiny.sdm_bin, tiny.tdm_bin)]


def headless(args, sdm, tdm) -> list[dict]:
    dim = sdm.unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(1)
    cond = Conditioning(*(torch.randn(1, 77, dim, generator=g).to(args.device) for _ in range(3)))
    rows = []
    one_run(tdm, sdm, cond, 8, 1, 4, 0)  # warm-up
    for latent in args.latents:
        for batch in args.batches:
            runs = [
                one_run(tdm, sdm, cond, latent, batch, args.steps, r) for r in range(args.repeats)
            ]
            rows.append(
                {
                    "latent": latent,
                    "batch": batch,
                    "calls": runs[0]["calls"],
                    "loop_over_model": statistics.median(r["loop_ratio"] for r in runs),
                    "loop_over_model_min": min(r["loop_ratio"] for r in runs),
                    "loop_over_model_max": max(r["loop_ratio"] for r in runs),
                    "snf_share": statistics.median(r["fusion_share"] for r in runs),
                }
            )
    return rows


def overlap_ab(args, sdm, tdm) -> dict:
    dim = sdm.unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(2)
    cond = Conditioning(*(torch.randn(1, 77, dim, generator=g).to(args.device) for _ in range(3)))
    latent, batch = args.latents[0], args.batches[0]
    ratios = []
    for r in range(args.repeats):  # A B A B ...
        seq = one_run(tdm, sdm, cond, latent, batch, args.steps, r)["total_s"]
        ovl = one_run(tdm, sdm, cond, latent, batch, args.steps, r, overlap=True)["total_s"]
        ratios.append(ovl / seq)
    return {
        "latent": latent,
        "batch": batch,
        "overlap_over_sequential": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
    }


def comfyui(args) -> dict:
    script = str(HERE / "comfy_bench.py")
    base = [args.comfy_python, script, "--comfyui", str(args.comfyui), "--steps", str(args.steps)]
    sizes = ",".join(str(8 * s) for s in args.latents)
    batches = ",".join(str(b) for b in args.batches)
    proc = subprocess.run(
        base + ["--sizes", sizes, "--batches", batches, "--repeats", str(args.repeats)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["comfyui"]
    peaks = {}
    for variant in ("snf", "stock"):
        proc = subprocess.run(
            base + ["--sizes", str(8 * args.latents[-1]), "--peak", variant],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"rows": rows, "peak": peaks}


def unet_megabytes(models) -> float:
    return sum(p.numel() * p.element_size() for p in models.unet.parameters()) / 2**20


def markdown(result: dict) -> str:
    meta = result["meta"]
    out = [
        f"# Face-diffuser benchmarks ({meta['date']}, {meta['machine']}, torch "
        f"{meta['torch']}, {meta['models']}, DDIM {meta['steps']} steps, median of "
        f"{meta['repeats']})",
        "",
    ]
    out += [
        "## Headless loop (sampling time / time inside the UNets)",
        "",
        "| latent | batch | UNet calls | loop / model | min-max | SNF share of model time |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["headless"]:
        out.append(
            f"| {r['latent']}x{r['latent']} | {r['batch']} | {r['calls']} | "
            f"{r['loop_over_model']:.3f} | {r['loop_over_model_min']:.3f}-"
            f"{r['loop_over_model_max']:.3f} | {100 * r['snf_share']:.2f} % |"
        )
    o = result["overlap"]
    out += [
        "",
        f"Overlap mode (fusion-stage UNet calls concurrently), latent {o['latent']}, "
        f"batch {o['batch']}: overlapped / sequential = {o['overlap_over_sequential']:.3f} "
        f"(min-max {o['min']:.3f}-{o['max']:.3f}).",
    ]
    if "comfyui" in result:
        c = result["comfyui"]
        out += [
            "",
            "## Inside ComfyUI: SNF KSampler vs stock KSampler (same model, steps, "
            "sampler ddim/ddim_uniform, size; alternating A B)",
            "",
            "| image | batch | SNF / stock | min-max | SNF loop / model | stock loop / model "
            "| NaN guard share |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in c["rows"]:
            out.append(
                f"| {r['size']}x{r['size']} | {r['batch']} | {r['snf_over_stock']:.3f} | "
                f"{r['snf_over_stock_min']:.3f}-{r['snf_over_stock_max']:.3f} | "
                f"{r['snf_loop_over_model']:.3f} | {r['stock_loop_over_model']:.3f} | "
                f"{100 * r.get('snf_guard_share', 0.0):.3f} % |"
            )
        snf = c["peak"]["snf"]["peak_rss_kb"] / 1024
        stock = c["peak"]["stock"]["peak_rss_kb"] / 1024
        out += [
            "",
            f"Peak RSS of one run in a fresh process: SNF {snf:.0f} MiB, stock "
            f"{stock:.0f} MiB (difference {snf - stock:+.0f} MiB; one UNet is "
            f"{result['unet_mib']:.1f} MiB).",
        ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--latents", default="8,16,32", help="latent sides (image / 8)")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--full-size", action="store_true", help="SD1.5-shaped random UNets")
    parser.add_argument("--comfyui", type=Path, help="a ComfyUI folder to measure inside")
    parser.add_argument(
        "--comfy-python", default=sys.executable, help="the python of that ComfyUI's environment"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    args.latents = [int(v) for v in args.latents.split(",")]
    args.batches = [int(v) for v in args.batches.split(",")]
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)

    sdm, tdm = load_pair(args.full_size, args.device, dtype)
    result = {
        "meta": {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"
            + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""),
            "torch": torch.__version__,
            "models": "SD1.5-sized random UNets" if args.full_size else "tiny models",
            "steps": args.steps,
            "repeats": args.repeats,
        },
        "unet_mib": unet_megabytes(tdm),
    }
    with torch.inference_mode():
        result["headless"] = headless(args, sdm, tdm)
        result["overlap"] = overlap_ab(args, sdm, tdm)
    if args.comfyui:
        result["comfyui"] = comfyui(args)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
