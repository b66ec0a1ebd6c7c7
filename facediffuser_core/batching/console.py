"""What a batch run prints: one line per row (stdout), notes and retries (stderr), and a
progress bar over the rows that leaves those lines readable. Shared by both executors.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class Console:
    """Lines and a progress bar; ``log`` (a callable) takes every line instead, as tests and
    programs that embed a run want."""

    def __init__(self, log: Callable[[str], None] | None = None):
        self._log = log
        self.bar: Any = None

    def log(self, text: str, stream: Any = None) -> None:
        """A note (stderr), written above the bar."""
        if self._log is not None:
            self._log(text)
        elif self.bar is not None:
            self.bar.write(text, file=stream or sys.stderr)
        else:
            print(text, file=stream or sys.stderr, flush=True)

    def say(self, text: str) -> None:
        """A row's outcome (stdout)."""
        self.log(text, sys.stdout)

    def start(self, total: int, show: bool, postfix: str = "") -> None:
        """A bar over ``total`` rows, if ``show`` and there is anything to do."""
        if show and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="item", dynamic_ncols=True, file=sys.stderr)
            if postfix:
                self.bar.set_postfix_str(postfix)

    def advance(self) -> None:
        """One more row finished."""
        if self.bar is not None:
            self.bar.update(1)

    def status(self, text: str) -> None:
        """What the workers are doing, beside the bar."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
