"""Headless loop overhead on the tiny models: how much time is spent outside model calls.

Prints, per latent size and batch, the ratio of the whole sampling loop's wall time to
the time spent inside the two UNets, and the SNF fusion time as a share of model time.
All ratios come from the same run (these machines are noisy; absolute times lie). Goal:
fusion overhead < 2 % of model-call time.

    python benchmarks/loop_overhead.py [--repeats 3] [--steps 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import facediffuser_core.engine.sampling as sampling  # noqa: E402
from facediffuser_core.engine.sampling import Conditioning, UNetEps, sample  # noqa: E402
from facediffuser_core.engine.schedulers import make_scheduler  # noqa: E402
from facediffuser_core.tiny.diffusion import write_tiny_set  # noqa: E402
from facediffuser_core.weights.models import load_models  # noqa: E402


class Timed:
    """Wraps a callable and adds up the wall time spent inside it."""

    def __init__(self, fn):
        self.fn = fn
        self.seconds = 0.0
        self.prediction_type = getattr(fn, "prediction_type", "epsilon")

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def one_run(
    tdm, sdm, cond, latent: int, batch: int, steps: int, seed: int, overlap: bool = False
) -> dict[str, float]:
    tdm_t, sdm_t = Timed(UNetEps(tdm.unet)), Timed(UNetEps(sdm.unet))
    fusion_t = Timed(sampling.fuse_with_saliency)
    sampling.fuse_with_saliency = fusion_t
    param = next(tdm.unet.parameters())
    cuda = param.device.type == "cuda"
    try:
        noise = torch.randn(batch, 4, latent, latent, generator=torch.Generator().manual_seed(seed))
        noise = noise.to(param.device)
        if cuda:  # model times are then launch times: only total_s and the peak mean much
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = sample(
            tdm_t,
            sdm_t,
            make_scheduler("ddim"),
            noise,
            cond,
            steps=steps,
            start_merge_step=round(0.32 * steps) - 1,
            final_step=round(0.62 * steps) - 1,
            progress=False,
            overlap=overlap,
        )
        if cuda:
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
    finally:
        sampling.fuse_with_saliency = fusion_t.fn
    fusion_steps = sum(r.sdm_mask is not None for r in result.records)
    model = tdm_t.seconds + sdm_t.seconds
    return {
        "total_s": total,
        "model_s": model,
        "loop_ratio": total / model,
        "fusion_share": fusion_t.seconds / model,
        "fusion_ms_per_step": 1000 * fusion_t.seconds / max(fusion_steps, 1),
        "calls": sum(result.model_calls.values()),
        "steps_per_s": steps / total,
        "peak_vram": torch.cuda.max_memory_allocated() if cuda else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--latents", default="8,16,32", help="latent sides to measure")
    parser.add_argument("--batches", default="1,2", help="batch sizes to measure")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny_set(Path(tmp), seed=0)
        sdm, tdm = load_models(tiny.sdm_bin), load_models(tiny.tdm_bin)
    dim = sdm.unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(1)
    cond = Conditioning(*(torch.randn(1, 77, dim, generator=g) for _ in range(3)))

    rows = []
    with torch.inference_mode():
        one_run(tdm, sdm, cond, 8, 1, 4, 0)  # warm-up
        for latent in (int(v) for v in args.latents.split(",")):
            for batch in (int(v) for v in args.batches.split(",")):
                runs = [
                    one_run(tdm, sdm, cond, latent, batch, args.steps, r)
                    for r in range(args.repeats)
                ]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                med.update(
                    latent=latent,
                    batch=batch,
                    steps=args.steps,
                    loop_ratio_min=min(r["loop_ratio"] for r in runs),
                    loop_ratio_max=max(r["loop_ratio"] for r in runs),
                )
                rows.append(med)

    print(
        f"# Face-diffuser headless loop overhead ({time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, tiny models, DDIM {args.steps} steps, "
        f"median of {args.repeats})\n"
    )
    print(
        "| latent | batch | UNet calls | loop / model time | min-max | SNF share of model time "
        "| SNF ms/step |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['latent']}x{r['latent']} | {r['batch']} | {int(r['calls'])} | "
            f"{r['loop_ratio']:.3f} | {r['loop_ratio_min']:.3f}-{r['loop_ratio_max']:.3f} | "
            f"{100 * r['fusion_share']:.2f} % | {r['fusion_ms_per_step']:.2f} |"
        )
    worst = max(r["fusion_share"] for r in rows)
    verdict = "met" if worst < 0.02 else "NOT met"
    print(
        f"\nSNF fusion overhead: worst {100 * worst:.2f} % of model-call time "
        f"(goal < 2 %: {verdict})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if worst < 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
