"""Face-diffuser inside ComfyUI, in-process: SNF KSampler vs the stock KSampler.

Run with ComfyUI's python (it imports ComfyUI from --comfyui). It loads the tiny models
through the pack's own loaders, then times, alternately (A B A B ...), the pack's
"Face-diffuser KSampler (SNF)" and ComfyUI's stock KSampler on the TDM, same steps, sampler
and size. A UNet wrapper adds up the time spent inside model calls, so the overhead of
everything else is a ratio too. Prints JSON on stdout (benchmarks/run.py reads it).

    <comfyui python> benchmarks/comfy_bench.py --comfyui /path/to/ComfyUI [--sizes 64,128,256]
    <comfyui python> benchmarks/comfy_bench.py --comfyui ... --peak snf|stock   (RSS of one run)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK = "facediffuser_pack_bench"


def load_comfy(comfyui: Path):
    sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # importing comfy outside main.py on a CPU torch
    comfy.cli_args.args.use_pytorch_cross_attention = True
    import nodes as comfy_nodes  # ComfyUI's nodes.py

    spec = importlib.util.spec_from_file_location(
        PACK, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = pack
    spec.loader.exec_module(pack)
    return comfy_nodes, pack


class ModelTimer:
    """Adds up the wall time of every UNet call (ComfyUI's BaseModel.apply_model)."""

    def __init__(self):
        import comfy.model_base

        self.seconds = 0.0
        self.calls = 0
        original = comfy.model_base.BaseModel.apply_model

        def timed(model, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(model, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        comfy.model_base.BaseModel.apply_model = timed

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


TIMER: ModelTimer | None = None


class GuardTimer:
    """Adds up the wall time of the SNF guider's non-finite check (its per-call guard)."""

    def __init__(self):
        self.seconds = 0.0
        guider = importlib.import_module(f"{PACK}.nodes.guider").SNFGuider
        original = guider._finite

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        guider._finite = timed


GUARD: GuardTimer | None = None


def setup(comfy_nodes, pack, folder: Path):
    tiny = importlib.import_module(f"{PACK}.facediffuser_core.tiny.diffusion")
    tiny.write_tiny_set(folder, comfyui=True)
    models = importlib.import_module(f"{PACK}.nodes.comfy_models")
    encode_mod = importlib.import_module(f"{PACK}.nodes.subject_encode")
    sdm = models.load_checkpoint(folder / "models/facediffuser/SDM/pytorch_model.bin", "sdm")
    tdm = models.load_checkpoint(folder / "models/facediffuser/TDM/pytorch_model.bin", "tdm")
    import numpy as np
    import torch
    from PIL import Image

    ref = Image.open(folder / "input/facediffuser_person_1.png").convert("RGB")
    person = torch.from_numpy(np.asarray(ref, dtype=np.float32) / 255.0)[None]
    subject, text, _ = encode_mod.SubjectEncode.execute(  # a V3 node: a classmethod
        sdm.clip, sdm.subject, "a woman <|image|> reading a book in a cafe", person_1=person
    ).result
    (negative,) = comfy_nodes.CLIPTextEncode().encode(sdm.clip, "")
    return sdm, tdm, negative, text, subject


def run_once(variant, comfy_nodes, pack, sdm, tdm, conds, size, batch, steps):
    import torch

    sampling = importlib.import_module(f"{PACK}.nodes.sampling")
    negative, text, subject = conds
    latent = {"samples": torch.zeros(batch, 4, size // 8, size // 8)}
    global TIMER, GUARD
    TIMER = TIMER or ModelTimer()
    TIMER.reset()
    GUARD = GUARD or GuardTimer()
    GUARD.seconds = 0.0
    tdm_model, sdm_model = tdm.model, (sdm.model if sdm is not None else None)
    t0 = time.perf_counter()
    if variant == "snf":
        sampling.SNFKSampler.execute(
            tdm_model,
            sdm_model,
            negative,
            text,
            subject,
            latent,
            0,
            steps,
            5.0,
            "ddim",
            "ddim_uniform",
            1.0,
            0.32,
            0.62,
        )
    else:
        comfy_nodes.common_ksampler(
            tdm_model, 0, steps, 5.0, "ddim", "ddim_uniform", text, negative, latent
        )
    total = time.perf_counter() - t0
    return {
        "total_s": total,
        "model_s": TIMER.seconds,
        "calls": TIMER.calls,
        "guard_s": GUARD.seconds,
    }


def peak(args, comfy_nodes, pack, folder: Path) -> int:
    """Peak RSS of one run in this fresh process, loading only what the variant needs."""
    size = int(args.sizes.split(",")[0])
    if args.peak == "snf":
        sdm, tdm, *conds = setup(comfy_nodes, pack, folder)
    else:  # a stock SD1.5 graph: the TDM alone, its own CLIP for the prompts
        tiny = importlib.import_module(f"{PACK}.facediffuser_core.tiny.diffusion")
        tiny.write_tiny_set(folder, comfyui=True)
        models = importlib.import_module(f"{PACK}.nodes.comfy_models")
        tdm = models.load_checkpoint(folder / "models/facediffuser/TDM/pytorch_model.bin", "tdm")
        (text,) = comfy_nodes.CLIPTextEncode().encode(tdm.clip, "a woman reading in a cafe")
        (negative,) = comfy_nodes.CLIPTextEncode().encode(tdm.clip, "")
        sdm, conds = None, (negative, text, None)
    run_once(args.peak, comfy_nodes, pack, sdm, tdm, conds, size, 1, args.steps)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"variant": args.peak, "peak_rss_kb": rss}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", required=True, type=Path)
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak", choices=("snf", "stock"), help="one run; report peak RSS")
    args = parser.parse_args()
    comfy_nodes, pack = load_comfy(args.comfyui)
    import torch

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        if args.peak:
            return peak(args, comfy_nodes, pack, Path(tmp))
        sdm, tdm, *conds = setup(comfy_nodes, pack, Path(tmp))
        size = int(args.sizes.split(",")[0])
        run_once("snf", comfy_nodes, pack, sdm, tdm, conds, size, 1, 4)  # warm-up
        run_once("stock", comfy_nodes, pack, sdm, tdm, conds, size, 1, 4)
        rows = []
        for size in (int(s) for s in args.sizes.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                runs = {"snf": [], "stock": []}
                for _ in range(args.repeats):  # alternate: A B A B ...
                    for variant in ("snf", "stock"):
                        runs[variant].append(
                            run_once(
                                variant, comfy_nodes, pack, sdm, tdm, conds, size, batch, args.steps
                            )
                        )
                ratios = [
                    a["total_s"] / b["total_s"]
                    for a, b in zip(runs["snf"], runs["stock"], strict=True)
                ]
                rows.append(
                    {
                        "size": size,
                        "batch": batch,
                        "steps": args.steps,
                        "snf_over_stock": statistics.median(ratios),
                        "snf_over_stock_min": min(ratios),
                        "snf_over_stock_max": max(ratios),
                        "snf_loop_over_model": statistics.median(
                            r["total_s"] / r["model_s"] for r in runs["snf"]
                        ),
                        "stock_loop_over_model": statistics.median(
                            r["total_s"] / r["model_s"] for r in runs["stock"]
                        ),
                        "snf_guard_share": statistics.median(
                            r["guard_s"] / r["total_s"] for r in runs["snf"]
                        ),
                        "snf_s": statistics.median(r["total_s"] for r in runs["snf"]),
                        "stock_s": statistics.median(r["total_s"] for r in runs["stock"]),
                    }
                )
        print(json.dumps({"comfyui": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
