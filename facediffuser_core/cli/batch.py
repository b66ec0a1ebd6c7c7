"""``facediffuser batch``: a CSV/JSONL batch rendered by the headless engine, in this process
or on a Ray cluster (``--ray``); the same rows and manifest as ``facediffuser queue``.
"""

from __future__ import annotations

import argparse
from functools import partial

from ..errors import InputError
from .batchoptions import add_row_options, check_output_folder, rows_from
from .generate import TINY_SIZE
from .models import check_memory, check_model_options, model_paths
from .options import add_device_options
from .usage import resolve_device

HELP = "render a CSV/JSONL batch with the headless engine, here or on a Ray cluster (--ray)"
DESCRIPTION = (
    "Render every row of a batch file (prompt, people, seed, settings: the rows "
    "'facediffuser queue' reads) with the headless engine: in this process by default, or "
    "on a Ray cluster with --ray, one long-lived worker per GPU (or per --cpus-per-worker "
    "CPUs), each loading the models once. Images and manifest.json go to --out, written as "
    "rows finish; running again resumes (rows done are skipped). Without --sdm/--tdm it runs "
    "the built-in tiny models. Exit status 0 when every row is done, 1 when some failed, 2 "
    "for a mistake in the command, 130 on Ctrl-C. See docs/batch.md."
)
ENGINE_NEEDS = "every row needs a prompt and the people's photos (a column, or -p and -r)"
MAX_CPUS_PER_WORKER = 1024


def check_batch_options(args: argparse.Namespace) -> None:
    """Everything cheap about the options, before any model or cluster is touched."""
    if args.workers is not None and not args.ray:
        raise InputError("--workers needs --ray: in this process one worker renders the rows")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: give 1 or more")
    if not 1 <= args.cpus_per_worker <= MAX_CPUS_PER_WORKER:
        raise InputError(f"--cpus-per-worker {args.cpus_per_worker}: give 1 to 1024")
    if args.ray is not None and not args.ray.strip():
        raise InputError("--ray is empty: give auto, or the cluster's address (HOST:6379)")
    check_model_options(args)
    if args.sdm is None:  # the tiny models: small images unless asked otherwise
        args.width = TINY_SIZE if args.width is None else args.width
        args.height = TINY_SIZE if args.height is None else args.height


def run(args: argparse.Namespace) -> int:
    """``facediffuser batch``: check everything, then render the rows still to do."""
    from ..cluster import BatchOptions, LocalPool, Models, run_batch

    check_batch_options(args)
    out = check_output_folder(args.out)
    rows = rows_from(args, args.file, needed=ENGINE_NEEDS)
    paths = model_paths(args)
    cluster = None
    if args.ray:
        from ..cluster.raypool import RayPool, connect

        cluster = connect(args.ray)
        device = "cuda" if args.device == "auto" and cluster.gpus else args.device
        device = "cpu" if device == "auto" else device
    else:
        device = resolve_device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("fp16" if device != "cpu" else "fp32")
    models = Models(paths, device, dtype, args.cpus_per_worker)
    if cluster is None:
        _check_memory(rows, paths, device, dtype)
        pool = partial(LocalPool, models)
    else:
        pool = partial(RayPool, cluster, models, workers=args.workers)
    result = run_batch(rows, BatchOptions(out, models, progress=not args.no_progress), pool)
    print(result.counts())
    print(f"manifest {result.manifest}")
    return result.exit_code


def _check_memory(rows: list, paths: object, device: str, dtype: str) -> None:
    """Refuse a batch whose largest row cannot fit this machine, before loading models."""
    import torch

    from ..ranges import LATENT_SIZE
    from .models import DTYPES

    sizes = [r.settings for r in rows if not r.error]
    if sizes:
        largest = {
            key: max(s.get(key) or LATENT_SIZE[key]["default"] for s in sizes)
            for key in ("width", "height", "batch_size")
        }
        dtype_ = getattr(torch, DTYPES[dtype])
        check_memory(
            paths, largest["width"], largest["height"], device, dtype_, largest["batch_size"]
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``facediffuser batch``'s options."""
    parser.add_argument("file", help="CSV or JSONL batch file: one prompt per row")
    add_row_options(parser, "batch-out")
    parser.add_argument("--sdm", help="SDM pytorch_model.bin (or its folder, or a converted set)")
    parser.add_argument("--tdm", help="TDM pytorch_model.bin (or its folder, or a converted set)")
    parser.add_argument("--tokenizer", help="CLIP tokenizer folder (vocab.json + merges.txt)")
    parser.add_argument(
        "--tiny-dir", help="where the built-in tiny model set is cached (as in generate)"
    )
    add_device_options(parser)
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="render on a Ray cluster: auto (RAY_ADDRESS, a cluster started here with 'ray "
        "start', else a new one on this machine) or the head's address; needs "
        'pip install "facediffuser[cluster]"',
    )
    parser.add_argument(
        "--workers", type=int, help="with --ray: at most this many workers (default: all fit)"
    )
    parser.add_argument(
        "--cpus-per-worker",
        type=int,
        default=1,
        help="CPU threads of one worker without a GPU (1); the same value gives the same "
        "images here and on the cluster",
    )
    parser.set_defaults(run=run)
