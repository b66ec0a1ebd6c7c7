"""``facediffuser batch`` throughput: rows per minute in this process and with 1 and 2 Ray
CPU workers (one thread each) on the tiny models, measured in one run.

The workers are started and their models loaded before the clock starts, so the numbers are
steady-state rendering (plus the driver's recording), not cluster start-up. The scaling from
1 to 2 workers is only meaningful on a quiet machine with two free cores: the load average
before and after is printed with the table; a busy machine shows up there.

    python benchmarks/batch_scaling.py [--rows 12] [--size 128] [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from facediffuser_core.batching import Row, read_batch  # noqa: E402
from facediffuser_core.cli.models import ModelPaths  # noqa: E402
from facediffuser_core.cluster import BatchOptions, LocalPool, Models, run_batch  # noqa: E402
from facediffuser_core.tiny.diffusion import write_tiny_set  # noqa: E402


def rows(folder: Path, count: int, size: int, steps: int) -> list[Row]:
    """``count`` rows alternating the two tiny portraits, as a batch file would give them."""
    lines = ["id,prompt,references,seed,steps,width,height"]
    for i in range(count):
        who, photo = ("woman", "person_2.png") if i % 2 else ("man", "person_1.png")
        lines.append(f"r{i:03d},a {who} <|image|> in place {i},{photo},{i},{steps},{size},{size}")
    (folder / "rows.csv").write_text("\n".join(lines) + "\n")
    return read_batch(folder / "rows.csv")


def timed(batch: list[Row], out: Path, models: Models, pool) -> float:
    """Seconds to render ``batch`` with the ready ``pool`` (recording included)."""
    t0 = time.perf_counter()
    result = run_batch(batch, BatchOptions(out, models, progress=False), lambda: pool, log=str)
    seconds = time.perf_counter() - t0
    assert len(result.done) == len(batch), result
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fd-batch-bench-"))
    try:
        tiny = write_tiny_set(work / "tiny", seed=0)
        for n, path in enumerate(tiny.references[:2], 1):
            shutil.copy(path, work / f"person_{n}.png")
        models = Models(ModelPaths(False, tiny.sdm_bin, tiny.tdm_bin, tiny.tokenizer))
        batch = rows(work, args.rows, args.size, args.steps)
        load = [os.getloadavg()[0]]
        local = LocalPool(models)
        results = {"in-process, 1 thread": timed(batch, work / "local", models, local)}
        local.close()

        import ray

        from facediffuser_core.cluster.raypool import RayPool, connect

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            cluster = connect("auto")
            for workers in (1, 2):
                pool = RayPool(cluster, models, workers=workers)
                ray.get([actor.ready.remote() for actor in pool.actors])  # models loaded
                name = f"Ray, {workers} CPU worker(s)"
                results[name] = timed(batch, work / f"ray{workers}", models, pool)
                pool.close()
        finally:
            ray.shutdown()
        load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.rows} rows, {args.size}x{args.size}, {args.steps} steps, tiny models")
    print(
        f"load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}, {os.cpu_count()} CPUs"
    )
    print("| pool | seconds | rows/min |")
    print("|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.1f} | {args.rows / seconds * 60:.1f} |")
    one, two = results["Ray, 1 CPU worker(s)"], results["Ray, 2 CPU worker(s)"]
    print(f"scaling 1 -> 2 Ray workers: {one / two:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": results, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
