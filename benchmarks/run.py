"""Face-diffuser benchmarks: one entry point, Markdown tables on stdout (JSON on request).

Every ratio is taken within one run (A B A B ..., medians with min-max): these machines are
noisy and absolute times lie. Modes (``--modes``, comma-separated):

  headless  sampling wall time / time inside the two UNets, and the SNF share
  overlap   overlapped / sequential sampling (fusion-stage calls on two CUDA streams on a GPU,
            a thread on a CPU)
  comfyui   inside ComfyUI (needs --comfyui): the SNF KSampler / the stock KSampler on the
            same model, sampler, steps and size, and each one's loop / model time
  peak      inside ComfyUI: peak RSS of one SNF run and of one stock run, fresh processes
  memory    time and peak RSS of converting and loading the weights (--weights), headless
            and (with --comfyui) through ComfyUI's Load SDM / Load TDM

The weights are the tiny set unless ``--weights DIR`` names a folder with SDM/ and TDM/ (a
published file or a converted set each), e.g. ``facediffuser tiny DIR --full-size``.
``--report DIR`` measures the "Performance and memory" table of docs/performance.md with
SD1.5-sized weights it writes (once) under DIR; ``benchmarks/gpu.sh`` is the GPU run.

    python benchmarks/run.py                                     # headless + overlap, tiny
    python benchmarks/run.py --modes comfyui,peak --comfyui DIR --comfy-python PY
    python benchmarks/run.py --report /scratch/fd --comfyui DIR --comfy-python PY
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from report import markdown, report_table  # noqa: E402

MODES = ("headless", "overlap", "comfyui", "peak", "memory")
DTYPES = ("fp32", "fp16", "bf16")


def _dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


# --------------------------------------------------------------------------- headless


def load_pair(args):
    """(sdm, tdm) models: from --weights (SDM/ and TDM/), or the tiny set written now."""
    import tempfile

    from facediffuser_core.weights.models import load_models

    dtype = _dtype(args.dtype)
    if args.weights:
        paths = [args.weights / kind for kind in ("SDM", "TDM")]
        return [load_models(p, device=args.device, dtype=dtype) for p in paths]
    from facediffuser_core.tiny.diffusion import write_tiny_set

    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny_set(Path(tmp), seed=0)
        paths = (tiny.sdm_bin, tiny.tdm_bin)
        return [load_models(p, device=args.device, dtype=dtype) for p in paths]


def describe(models) -> str:
    """What the weights are, read from the UNet (SD1.5's has 860 M parameters)."""
    count = sum(p.numel() for p in models.unet.parameters())
    size = "SD1.5-sized" if count > 500e6 else "tiny"
    return f"{size} random weights (UNet {count / 1e6:.0f} M parameters)"


def _conditioning(sdm, device: str, seed: int):
    import torch

    from facediffuser_core.engine.sampling import Conditioning

    dim = sdm.unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(seed)
    return Conditioning(*(torch.randn(1, 77, dim, generator=g).to(device) for _ in range(3)))


def headless(args, sdm, tdm) -> list[dict]:
    from loop_overhead import one_run

    cond = _conditioning(sdm, args.device, 1)
    one_run(tdm, sdm, cond, args.latents[0], 1, 2, 0)  # warm-up
    rows = []
    for latent in args.latents:
        for batch in args.batches:
            runs = [
                one_run(tdm, sdm, cond, latent, batch, args.steps, r) for r in range(args.repeats)
            ]
            rows.append(
                {
                    "latent": latent,
                    "batch": batch,
                    "steps": args.steps,
                    "calls": runs[0]["calls"],
                    "loop_over_model": statistics.median(r["loop_ratio"] for r in runs),
                    "loop_over_model_min": min(r["loop_ratio"] for r in runs),
                    "loop_over_model_max": max(r["loop_ratio"] for r in runs),
                    "snf_share": statistics.median(r["fusion_share"] for r in runs),
                    "steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
                    "peak_vram": max(r["peak_vram"] or 0 for r in runs) or None,
                }
            )
    return rows


def overlap_ab(args, sdm, tdm) -> dict:
    from loop_overhead import one_run

    cond = _conditioning(sdm, args.device, 2)
    latent, batch = args.latents[-1], args.batches[0]
    ratios, seq, ovl = [], [], []
    for r in range(args.repeats):  # A B A B ...
        seq.append(one_run(tdm, sdm, cond, latent, batch, args.steps, r))
        ovl.append(one_run(tdm, sdm, cond, latent, batch, args.steps, r, overlap=True))
        ratios.append(ovl[-1]["total_s"] / seq[-1]["total_s"])
    return {
        "latent": latent,
        "batch": batch,
        "steps": args.steps,
        "overlap_over_sequential": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "sequential_steps_per_s": statistics.median(r["steps_per_s"] for r in seq),
        "overlap_steps_per_s": statistics.median(r["steps_per_s"] for r in ovl),
        "sequential_peak_vram": max(r["peak_vram"] or 0 for r in seq) or None,
        "overlap_peak_vram": max(r["peak_vram"] or 0 for r in ovl) or None,
    }


# --------------------------------------------------------------------------- child processes


def child(command: list[str]) -> dict:
    """Run a measurement in a fresh process; its last stdout line is JSON. Errors say why."""
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"benchmark step failed: {' '.join(command)}\n{tail}")
    return json.loads(lines[-1])


def comfy_command(args, mode: list[str], weights: Path | None = None) -> list[str]:
    script = [args.comfy_python, str(HERE / "comfy_bench.py"), "--comfyui", str(args.comfyui)]
    options = ["--sizes", ",".join(str(s) for s in args.sizes), "--steps", str(args.steps)]
    options += ["--batches", ",".join(str(b) for b in args.batches)]
    options += ["--repeats", str(args.repeats)]
    weights = weights or args.weights
    if weights:
        options += ["--weights", str(weights)]
    if args.device.startswith("cuda"):
        options += ["--gpu"]
    return script + options + mode


def comfyui(args, weights: Path | None = None) -> list[dict]:
    return child(comfy_command(args, ["speed"], weights))["comfyui"]


def peaks(args) -> dict:
    return {v: child(comfy_command(args, ["peak", v]))["peak_rss"] for v in ("snf", "stock")}


def memory_script(*command: str) -> list[str]:
    return [sys.executable, str(HERE / "memory.py"), *command]


def memory(args, weights: Path) -> dict:
    """Loading ``weights`` (SDM/, TDM/) headless in the CLI's default dtype, and in ComfyUI."""
    sdm, tdm = (str(weights / kind) for kind in ("SDM", "TDM"))
    out = {"headless": child(memory_script("load", sdm, tdm, "--dtype", args.dtype))["load"]}
    if args.comfyui:
        comfy = child(comfy_command(args, ["memory"], weights))["memory"]
        out["comfyui"] = comfy
    return out


# --------------------------------------------------------------------------- the report


def report(args) -> dict:
    """SD1.5-sized weights written once under --report, then every row of the table."""
    import torch

    root = args.report
    published, half = root / "published", root / "fp16"
    result = {}
    if not (published / "TDM" / "pytorch_model.bin").is_file():
        result["write"] = child(memory_script("write", str(published), "--dtype", "published"))[
            "write"
        ]
    result["convert"] = {}
    for kind in ("SDM", "TDM"):
        step = child(memory_script("convert", str(published / kind), str(half / kind)))
        result["convert"][kind] = step["convert"]
    loads = {}
    for name, weights, dtype in (
        ("bin_fp32", published, "fp32"),
        ("bin_fp16", published, "fp16"),
        ("fp16_fp16", half, "fp16"),
    ):
        command = memory_script("load", str(weights / "SDM"), str(weights / "TDM"))
        loads[name] = child([*command, "--dtype", dtype])["load"]
    result["headless_load"] = loads
    if args.comfyui:
        result["comfyui_load"] = {
            "bin": child(comfy_command(args, ["memory"], published))["memory"],
            "fp16": child(comfy_command(args, ["memory"], half))["memory"],
        }
        speed_args = argparse.Namespace(**{**vars(args), "sizes": [256, 512], "batches": [1]})
        result["comfyui_speed"] = comfyui(speed_args, half)
    args.weights, args.latents, args.batches = half, [64], [1]
    sdm, tdm = load_pair(args)
    with torch.inference_mode():
        result["headless_sd15"] = headless(args, sdm, tdm)
    return result


def meta(args) -> dict:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""),
        "torch": torch.__version__,
        "models": "SD1.5-sized random weights" if args.report else "tiny models",
        "steps": args.steps,
        "repeats": args.repeats,
        "device": args.device,
        "dtype": args.dtype,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="headless,overlap", help=f"of {', '.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--latents", default="8,16,32", help="latent sides (image / 8)")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--sizes", default="64,128,256", help="ComfyUI image sides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--weights", type=Path, help="a folder with SDM/ and TDM/")
    parser.add_argument("--comfyui", type=Path, help="a ComfyUI folder to measure inside")
    parser.add_argument(
        "--comfy-python", default=sys.executable, help="the python of that ComfyUI's environment"
    )
    parser.add_argument("--report", type=Path, help="measure docs/performance.md's table here")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    args.latents = [int(v) for v in args.latents.split(",")]
    args.batches = [int(v) for v in args.batches.split(",")]
    args.sizes = [int(v) for v in args.sizes.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown or ({"comfyui", "peak"} & set(modes) and not args.comfyui):
        parser.error(f"unknown modes {unknown}" if unknown else "comfyui/peak need --comfyui")
    if "memory" in modes and not args.weights:
        parser.error("the memory mode needs --weights DIR (SDM/ and TDM/)")
    import torch

    torch.manual_seed(0)
    result = {"meta": meta(args)}
    if args.report:
        args.steps = 10  # SD1.5 on a CPU: stage proportions kept (3/6 of 10: 13 calls vs 10)
        result["report"] = report(args)
        print(report_table(result))
    else:
        if {"headless", "overlap"} & set(modes):
            sdm, tdm = load_pair(args)
            result["meta"]["models"] = describe(tdm)
            with torch.inference_mode():
                if "headless" in modes:
                    result["headless"] = headless(args, sdm, tdm)
                if "overlap" in modes:
                    result["overlap"] = overlap_ab(args, sdm, tdm)
            del sdm, tdm
        if "comfyui" in modes:
            result["comfyui"] = comfyui(args)
        if "peak" in modes:
            result["peak"] = peaks(args)
        if "memory" in modes:
            result["memory"] = memory(args, args.weights)
        print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
