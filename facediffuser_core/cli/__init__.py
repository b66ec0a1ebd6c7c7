"""``facediffuser`` command line: generate, evaluate, convert, tiny, doctor, queue, batch.

One module per command, named after it, with its ``HELP`` and ``DESCRIPTION``, its options
(``add_arguments``) and what it runs (``run``).
Every user mistake ends as one line on stderr (``facediffuser: error: ...``) with exit
status 2, found before models are loaded (``usage``, ``models``); ``--debug`` shows the
traceback too. Shared by the commands: ``models`` (model and device choice of generate and
evaluate), ``options`` (options several commands take), ``usage`` (option checks) and
``memory`` (will a run fit).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import FaceDiffuserError
from . import batch, convert, doctor, evaluate, generate, queue, tiny
from .usage import missing_package_message

COMMANDS = (
    generate,
    evaluate,
    convert,
    tiny,
    doctor,
    queue,
    batch,
)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    """The ``facediffuser`` parser: one sub-command per command module."""
    parser = argparse.ArgumentParser(
        prog="facediffuser",
        description="Face-diffuser (CVPR 2024): TDM -> SNF -> SDM generation of reference people.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, too")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        name = command.__name__.rsplit(".", 1)[1]  # the command is named after its module
        options = sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(options)
        options.add_argument(  # also accepted after the command's name
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        options.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user mistake is one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FaceDiffuserError as exc:
        if args.debug:
            raise
        # a path or prompt typed in another encoding holds surrogates: shown escaped
        text = str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
        print(f"facediffuser: error: {text}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        message = missing_package_message(exc.name or "")
        if message is None or args.debug:
            raise
        print(f"facediffuser: error: {message}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.debug:
            raise
        print(
            "facediffuser: error: out of memory: use a smaller --width/--height (or --dtype fp16 "
            "on a GPU)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("facediffuser: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
