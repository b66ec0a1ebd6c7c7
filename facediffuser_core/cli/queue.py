"""``facediffuser queue``: its options and the command (items from options or a batch file).

The HTTP client that runs them on ComfyUI servers is ``facediffuser_core.apiqueue``; like
it, this module imports no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..apiqueue.batch import _convert, make_item, read_batch
from ..apiqueue.client import DEFAULT_SERVER
from ..apiqueue.errors import QueueError
from ..apiqueue.jobs import QueueOptions
from ..apiqueue.limits import out_of_range, pack_limits
from ..apiqueue.runner import run_queue, summary
from .options import add_reference_option
from .usage import check_out_folder

HELP = "run a workflow on one or many ComfyUI servers through their HTTP API (batch files)"
DESCRIPTION = (
    "Queue a Face-diffuser workflow (API or UI format; default: the shipped one- "
    "or two-person graph) on ComfyUI servers, for one prompt or a CSV/JSONL batch. Settings "
    "are applied by meaning (prompt, references, seed, steps, cfg, stage boundaries, size). "
    "Results and manifest.json go to --out; running again resumes. Exit status 0 when every "
    "item is done, 1 when some failed, 130 on Ctrl-C."
)


def run(args: argparse.Namespace) -> int:
    """``facediffuser queue``: build items from the options / batch file and run them."""
    defaults = {
        "prompt": args.prompt,
        "negative": args.negative,
        "seed": args.seed,
        "steps": args.steps,
        "cfg": args.cfg,
        "scene_end": args.scene_end,
        "fusion_end": args.fusion_end,
        "width": args.width,
        "height": args.height,
        "batch_size": args.batch_size,
    }
    if args.depth < 1 or args.retries < 0 or args.timeout <= 0 or args.poll <= 0:
        raise QueueError("--depth must be >= 1, --retries >= 0, --timeout and --poll > 0")
    check_out_folder(args.out)
    cwd = Path.cwd()
    checked = {}
    for key, value in defaults.items():
        try:
            checked[key] = _convert(key, value, cwd)
        except ValueError as exc:
            raise QueueError(f"--{key.replace('_', '-')}: {exc}") from None
    if args.ref:
        try:
            checked["references"] = _convert("references", list(args.ref), cwd)
        except ValueError as exc:
            raise QueueError(f"--ref: {exc}") from None
    defaults = {k: v for k, v in checked.items() if v is not None}
    # An option out of the pack's range is the command line's mistake: refused at once,
    # before any server is asked (the rows are checked against each server's ranges later).
    broken = out_of_range(defaults, pack_limits())
    if broken is not None:
        limit, value = broken
        raise QueueError(
            f"--{limit.setting.replace('_', '-')} {value:g} is out of range: the "
            f"Face-diffuser nodes take {limit.describe()}"
        )
    if args.batch:
        items = read_batch(args.batch, defaults)
    else:
        item = make_item("0001", 0, {}, defaults, cwd)
        if item.error:
            raise QueueError(item.error)
        items = [item]
    options = QueueOptions(
        servers=args.server or [DEFAULT_SERVER],
        out=Path(args.out),
        depth=args.depth,
        poll=args.poll,
        timeout=args.timeout,
        retries=args.retries,
        interrupt=args.interrupt,
        websocket=not args.no_ws,
        progress=not args.no_progress,
    )
    result = run_queue(items, options, workflow=args.workflow)
    print(summary(result, options.out))
    return result.exit_code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``facediffuser queue``'s options."""
    parser.add_argument(
        "workflow",
        nargs="?",
        help="API-format workflow, or a UI workflow (converted with the server's /object_info); "
        "default: the shipped one-person graph for one reference, two-person for 2-4",
    )
    parser.add_argument(
        "-s",
        "--server",
        action="append",
        default=[],
        metavar="URL",
        help=f"ComfyUI server; repeat to spread the batch over several ({DEFAULT_SERVER})",
    )
    parser.add_argument("-b", "--batch", help="CSV or JSONL file: one prompt per row")
    parser.add_argument("--out", default="queue-out", help="output folder with manifest.json")
    parser.add_argument("-p", "--prompt", help="prompt with one <|image|> per person")
    add_reference_option(
        parser,
        "reference photo(s) of one person, uploaded to the server; comma-separated for "
        "several photos (-r a.png,b.png); repeat per person in marker order",
    )
    parser.add_argument("--negative", help="negative prompt text")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--scene-end", type=float, help="fraction of steps by the TDM alone")
    parser.add_argument("--fusion-end", type=float, help="fraction of steps when fusion ends")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument(
        "--batch-size", "--num-images", type=int, help="images per prompt (as in generate)"
    )
    parser.add_argument(
        "--depth", type=int, default=1, help="our prompts queued on one server at a time (1)"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds one item may take (3600)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="connection retries (exponential backoff) before a server is given up (5)",
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between result polls (1)")
    parser.add_argument(
        "--interrupt",
        action="store_true",
        help="on Ctrl-C also cancel our prompts still running or queued on the servers",
    )
    parser.add_argument("--no-ws", action="store_true", help="poll only, no websocket")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
