"""``facediffuser queue``: its options and the command (rows from options or a batch file,
run on ComfyUI servers by ``facediffuser_core.apiqueue``). Like it, this imports no torch.
"""

from __future__ import annotations

import argparse
import math

from ..apiqueue.client import DEFAULT_SERVER, server_url
from ..apiqueue.dispatch import QueueOptions, run_queue
from ..apiqueue.graph import load_workflow
from ..apiqueue.ledger import summary
from ..errors import InputError
from .batchoptions import add_row_options, check_output_folder, rows_from

HELP = "run a workflow on one or many ComfyUI servers through their HTTP API (batch files)"
DESCRIPTION = (
    "Queue a Face-diffuser workflow (API format, as Workflow > Export (API) writes it; "
    "default: the shipped one- or two-person graph) on ComfyUI servers, for one prompt or a "
    "CSV/JSONL batch. Settings are applied by meaning (prompt, references, seed, steps, cfg, "
    "stage boundaries, size). Results and manifest.json go to --out; running again resumes. "
    "Exit status 0 when every item is done, 1 when some failed, 2 for a mistake in the "
    "command, 130 on Ctrl-C. See docs/batch.md."
)
SHIPPED_NEEDS = (
    "the shipped workflows need a prompt and the people's photos (their own are only an "
    "example): give them, a batch file (-b), or your own workflow file to run as it is"
)
MAX_DEPTH = 64


def check_queue_options(args: argparse.Namespace) -> list[str]:
    """The run's numbers and servers (the servers' URLs, normalised); InputError if wrong."""
    if not 1 <= args.depth <= MAX_DEPTH:
        raise InputError(f"--depth {args.depth}: give 1 to {MAX_DEPTH} prompts per server")
    if args.retries < 0 or args.retries > 1000:
        raise InputError(f"--retries {args.retries}: give 0 to 1000")
    for name in ("timeout", "poll"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"--{name} {value:g}: give a number of seconds above 0")
    urls = [server_url(url) for url in args.server] or [DEFAULT_SERVER]
    if args.workflow is not None:
        load_workflow(args.workflow)  # refused now, not after the servers are asked
    return urls


def run(args: argparse.Namespace) -> int:
    """``facediffuser queue``: build the rows from the options / batch file and run them."""
    urls = check_queue_options(args)
    out = check_output_folder(args.out)
    needed = None if args.workflow else SHIPPED_NEEDS
    rows = rows_from(args, args.batch, needed=needed)
    options = QueueOptions(
        servers=urls,
        out=out,
        depth=args.depth,
        poll=args.poll,
        timeout=args.timeout,
        retries=args.retries,
        interrupt=args.interrupt,
        websocket=not args.no_ws,
        progress=not args.no_progress,
    )
    result = run_queue(rows, options, workflow=args.workflow)
    print(summary(result, out))
    return result.exit_code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``facediffuser queue``'s options."""
    parser.add_argument(
        "workflow",
        nargs="?",
        help="API-format workflow (ComfyUI: Workflow > Export (API)), run as it is but for "
        "the settings given; default: the shipped one-person graph for one reference, "
        "two-person for 2-4 (a prompt and references are then required)",
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
    add_row_options(parser, "queue-out")
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
    parser.set_defaults(run=run)
