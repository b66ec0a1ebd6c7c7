"""One ComfyUI server as the queue sees it: its client, whether it is still used (and why
not), what it cannot run, its uploads, progress from its websocket, and the calls its slots
make, retried with bounded backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .client import ComfyClient, ServerUnreachable
from .graph import server_problems
from .plan import Workflow

T = TypeVar("T")


class ServerGone(Exception):
    """The server failed more calls in a row than the retries allow: it is given up."""


class Stopped(Exception):
    """The run is stopping (Ctrl-C, or its stop event)."""


@dataclass(frozen=True)
class Retries:
    """How failed calls are retried: ``count`` in a row, waits from ``backoff`` doubling to
    ``backoff_max`` seconds."""

    count: int = 5
    backoff: float = 1.0
    backoff_max: float = 30.0
    request_timeout: float = 30.0


class Server:
    """Everything about one ComfyUI server that its slots share."""

    def __init__(
        self,
        url: str,
        index: int,
        retries: Retries,
        stop: threading.Event,
        log: Callable[[str], None],
    ):
        self.url, self.index = url, index
        self.client = ComfyClient(url, timeout=retries.request_timeout)
        self.retries, self.stop, self.log = retries, stop, log
        self.lock = threading.Lock()
        self.alive, self.reason, self.failures = True, "", 0
        self.cannot_run: dict[str, str] = {}  # workflow name -> why
        self.node_infos: dict[str, dict | None] = {}  # /object_info by class (None: lacks it)
        self.uploaded: dict[str, str] = {}  # photo sha -> name on the server
        self.progress: dict[str, tuple[int, int]] = {}  # prompt id -> (step, steps)
        self.wakes: dict[str, threading.Event] = {}  # prompt id -> set when it may be done
        self.reconnected = 0.0  # time.monotonic() of the websocket's last reconnection
        self.stats = {"done": 0, "failed": 0, "submitted": 0, "execution_s": 0.0}

    # ------------------------------------------------------------ calls

    def call(self, fn: Callable[..., T], *args: Any, retry: bool = True, **kw: Any) -> T:
        """``fn(*args, **kw)`` (a client method); a connection failure counts against the
        server and is retried after a backoff (``retry=False``: re-raised after it).

        Raises :class:`ServerGone` once the failures in a row exceed the retries, and
        :class:`Stopped` when the run stops.
        """
        while True:
            if self.stop.is_set():
                raise Stopped
            if not self.alive:
                raise ServerGone(self.reason)
            try:
                result = fn(*args, **kw)
            except ServerUnreachable as exc:
                self._failed(exc.reason)
                if not retry:
                    raise
                continue
            self._reached()
            return result

    def _failed(self, reason: str) -> None:
        with self.lock:
            self.failures += 1
            failures = self.failures
        if failures > self.retries.count:
            self.give_up(reason, f"giving up after {self.retries.count} retries ({reason})")
            raise ServerGone(reason)
        delay = min(self.retries.backoff_max, self.retries.backoff * 2 ** (failures - 1))
        self.log(
            f"server {self.url}: {reason}; retry {failures} of {self.retries.count} in "
            f"{delay:.1f} s"
        )
        if self.stop.wait(delay):
            raise Stopped

    def _reached(self) -> None:
        with self.lock:
            was, self.failures = self.failures, 0
        if was and self.alive:
            self.log(f"server {self.url}: reachable again")

    def give_up(self, reason: str, why: str | None = None) -> None:
        """Stop using this server (its jobs go to the others)."""
        with self.lock:
            if not self.alive:
                return
            self.alive, self.reason = False, reason
        self.log(f"server {self.url}: {why or reason}; its items go to the other servers")
        self.wake_all()

    # ------------------------------------------------------------ what it has

    def node_info(self, classes: Sequence[str]) -> dict[str, dict]:
        """``/object_info`` of these node classes (those the server has), each fetched once
        per run: planning (ranges) and the workflow check share it."""
        with self.lock:
            new = sorted({c for c in classes if c not in self.node_infos})
        found = {c: self.client.object_info(c) for c in new}
        with self.lock:
            self.node_infos.update(found)
            return {c: self.node_infos[c] for c in classes if self.node_infos.get(c)}

    def cannot(self, workflow: Workflow) -> str | None:
        """Why this server cannot run ``workflow`` (node types it lacks), None if it can;
        checked once per workflow."""
        if workflow.name not in self.cannot_run:
            info = self.call(self.node_info, [n["class_type"] for n in workflow.graph.values()])
            problems = server_problems(workflow.graph, info)
            if not problems:
                return None
            self.cannot_run[workflow.name] = "; ".join(problems)
        return self.cannot_run[workflow.name]

    def can_run(self, workflow: Workflow) -> bool:
        return self.alive and workflow.name not in self.cannot_run

    # ------------------------------------------------------------ its websocket

    def on_event(self, kind: str, data: dict) -> None:
        """A ``/ws`` message: step progress, or a prompt that may have finished."""
        if kind == "reconnected":  # messages may be lost: every slot looks at /queue now
            self.reconnected = time.monotonic()
            self.wake_all()
            return
        prompt_id = str(data.get("prompt_id") or "")
        if prompt_id not in self.wakes:
            return
        if kind == "progress":
            try:
                self.progress[prompt_id] = (int(data["value"]), int(data["max"]))
            except (KeyError, TypeError, ValueError):
                pass
        elif kind in ("execution_success", "execution_error", "execution_interrupted") or (
            kind == "executing" and data.get("node") is None
        ):
            self.wakes[prompt_id].set()

    def watch(self, prompt_id: str) -> threading.Event:
        return self.wakes.setdefault(prompt_id, threading.Event())

    def unwatch(self, prompt_id: str | None) -> None:
        self.wakes.pop(prompt_id or "", None)
        self.progress.pop(prompt_id or "", None)

    def wake_all(self) -> None:
        for event in list(self.wakes.values()):
            event.set()
