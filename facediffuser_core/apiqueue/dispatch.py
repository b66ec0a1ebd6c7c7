"""The dispatcher: it hands each job to the least busy server with a free slot, passes
every outcome to the ledger, and stops cleanly (:func:`run_queue`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..batching.manifest import FileDigests, now
from ..batching.model import Row
from .client import DEFAULT_SERVER, ServerUnreachable, server_url
from .graph import QueueError
from .ledger import Ledger, QueueResult
from .listener import Listener, websocket_available
from .plan import Job, Plan, Planner, make_plan
from .server import Retries, Server
from .slot import Outcome, Slot, SlotSettings


@dataclass
class QueueOptions:
    """How a batch is run; every wait has a bound."""

    servers: Sequence[str] = (DEFAULT_SERVER,)
    out: Path = Path("queue-out")
    depth: int = 1  # our prompts on one server at a time (2 keeps a GPU busy between items)
    poll: float = 1.0  # seconds between /history polls of a running prompt
    timeout: float = 3600.0  # per item, from submission to its result
    request_timeout: float = 30.0  # one HTTP request
    retries: int = 5  # consecutive connection failures before a server is given up
    backoff: float = 1.0  # first retry delay, doubled per failure
    backoff_max: float = 30.0
    max_attempts: int = 3  # submissions of one item (a server restart loses queued prompts)
    interrupt: bool = False  # on a stop, also cancel our running/queued prompts
    websocket: bool = True
    progress: bool = True


class Dispatcher:
    """One run of the queue; see :func:`run_queue`."""

    def __init__(self, options: QueueOptions, log: Callable[[str], None] | None = None):
        self.options = options
        self.ledger = Ledger(Path(options.out), log)
        self.manifest = self.ledger.manifest
        self.result = self.ledger.result
        self.log = self.ledger.log
        self.digests = FileDigests()
        self.stop = threading.Event()
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        self.client_id = "facediffuser-queue-" + uuid.uuid4().hex[:12]
        urls = list(dict.fromkeys(server_url(u) for u in options.servers)) or [DEFAULT_SERVER]
        retries = Retries(
            options.retries, options.backoff, options.backoff_max, options.request_timeout
        )
        self.servers = [Server(u, i, retries, self.stop, self.log) for i, u in enumerate(urls)]
        self.slots: list[Slot] = []
        self.listeners: dict[str, Listener] = {}  # by server url
        self.pending: deque[Job] = deque()
        self.waiting: dict[str, deque[Job]] = {s.url: deque() for s in self.servers}
        self.open = 0  # jobs not finished yet

    # ------------------------------------------------------------ the run

    def run(self, rows: Sequence[Row], workflow: str | os.PathLike | None) -> QueueResult:
        started, t0 = now(), time.monotonic()
        self._reach()
        planner = Planner(workflow, self.servers, self.digests)
        urls = {s.url for s in self.servers if s.alive}
        single = len(rows) == 1 and not rows[0].line
        plan = make_plan(rows, self.manifest, planner, urls, single=single)
        self.ledger.planned(plan)
        self._start(plan)
        try:
            self._loop()
        except KeyboardInterrupt:
            self.result.stopped(self.log)
        finally:
            self._finish(plan, started, t0)
        return self.result

    def _reach(self) -> None:
        """Reachability first: a server that does not answer is not used in this run."""
        for server in self.servers:
            try:
                server.client.queue_remaining(timeout=min(10.0, self.options.request_timeout))
            except ServerUnreachable as exc:
                server.alive, server.reason = False, exc.reason
                self.log(f"server {server.url}: {exc.reason}; not used in this run")
        if not any(s.alive for s in self.servers):
            raise QueueError(
                "no ComfyUI server is reachable: "
                + "; ".join(f"{s.url} ({s.reason})" for s in self.servers)
                + ": start ComfyUI there (python main.py --listen <address> --port <port>) "
                "or pass the right --server"
            )

    def _start(self, plan: Plan) -> None:
        self.pending.extend(plan.jobs)
        for job in plan.recovering:
            self.waiting[job.server or ""].append(job)
        self.open = len(plan.jobs) + len(plan.recovering)
        settings = SlotSettings(
            self.ledger.out, self.client_id, self.options.poll, self.options.timeout,
            self.options.max_attempts,
        )  # fmt: skip
        listen = self.options.websocket and websocket_available()
        if self.options.websocket and not listen:
            self.log("websocket-client is not installed: polling for results (pip install it)")
        for server in (s for s in self.servers if s.alive):
            if listen:
                listener = Listener(
                    server.url, self.client_id, server.on_event, self.stop,
                    backoff_max=self.options.backoff_max,
                )  # fmt: skip
                self.listeners[server.url] = listener
                listener.start()
            for _ in range(self.options.depth):
                self.slots.append(
                    Slot(server, settings, self.manifest, self.digests, self.outcomes)
                )
                self.slots[-1].start()
        self.ledger.console.start(self.open, self.options.progress)

    def _loop(self) -> None:
        while self.open > 0 and not self.stop.is_set():
            self._assign()
            if not any(s.alive for s in self.servers) and not self._busy():
                self._fail_pending()
                return
            try:
                outcome = self.outcomes.get(timeout=0.1)
            except queue.Empty:
                self.ledger.progress(self.servers, self._jobs_on())
                continue
            self._handle(outcome)

    def _busy(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.job is not None]

    def _jobs_on(self) -> dict[str, list[Job]]:
        """The jobs now on each server (by url)."""
        jobs: dict[str, list[Job]] = {}
        for slot in self._busy():
            jobs.setdefault(slot.server.url, []).append(slot.job)
        return jobs

    # ------------------------------------------------------------ dispatching

    def _give(self, slot: Slot, job: Job) -> None:
        slot.job = job
        slot.inbox.put(job)

    def _assign(self) -> None:
        """Hand pending jobs to free slots: a server's own (recovered) jobs first, then the
        next job to the least busy server that can run it."""
        for server in self.servers:
            if not server.alive and self.waiting[server.url]:
                for job in self.waiting[server.url]:
                    job.reset()
                self.pending.extendleft(reversed(self.waiting[server.url]))
                self.waiting[server.url].clear()
        free = [s for s in self.slots if s.job is None and s.server.alive]
        for slot in list(free):
            if self.waiting[slot.server.url]:
                self._give(slot, self.waiting[slot.server.url].popleft())
                free.remove(slot)
        loads: dict[str, float] = {}
        while self.pending and free:
            job = self.pending[0]
            able = [s for s in free if s.server.can_run(job.workflow)]
            if not able:
                if not any(s.can_run(job.workflow) for s in self.servers):
                    self.pending.popleft()
                    self._failed(job, None, self._nowhere(job))
                    continue
                return
            best = min(able, key=lambda s: self._load(s.server, loads))
            self.pending.popleft()
            free.remove(best)
            loads.pop(best.server.url, None)
            self._give(best, job)

    def _load(self, server: Server, loads: dict[str, float]) -> tuple:
        """(everyone's prompts on it, ours, how many it took, its order): least busy first."""
        if server.url not in loads:
            try:
                wait = min(5.0, self.options.request_timeout)
                loads[server.url] = server.client.queue_remaining(timeout=wait)
            except ServerUnreachable:
                loads[server.url] = 10**6  # still a candidate: its slot retries
        ours = sum(1 for s in self.slots if s.server is server and s.job is not None)
        return loads[server.url], ours, server.stats["submitted"], server.index

    def _nowhere(self, job: Job) -> str:
        name = job.workflow.name
        why = "; ".join(
            f"{s.url}: {s.cannot_run.get(name) or s.reason or 'unreachable'}" for s in self.servers
        )
        return f"no server left to run it ({why})"

    def _fail_pending(self) -> None:
        while self.pending:
            job = self.pending.popleft()
            self._failed(job, None, self._nowhere(job))

    # ------------------------------------------------------------ outcomes

    def _handle(self, outcome: Outcome) -> None:
        job, server = outcome.job, outcome.slot.server
        outcome.slot.job = None
        if outcome.kind == "done":
            self.open -= 1
            self.ledger.done(job, server, outcome)
        elif outcome.kind == "failed":
            self._failed(job, server, outcome.message)
        elif outcome.kind == "cannot_run":
            server.cannot_run[job.workflow.name] = outcome.message
            self.log(f"server {server.url} cannot run {job.workflow.name}: {outcome.message}")
            if any(s.can_run(job.workflow) for s in self.servers):
                self._release(job, f"{server.url} cannot run {job.workflow.name}")
            else:
                message = f"no server can run {job.workflow.name}: {outcome.message}"
                self._failed(job, server, message)
        elif outcome.kind == "release":
            self._release(job, outcome.message)
        else:  # stopped: recorded when the run ends
            self.waiting[server.url].appendleft(job)

    def _release(self, job: Job, reason: str) -> None:
        job.reset()
        self.ledger.released(job, reason)
        self.pending.appendleft(job)

    def _failed(self, job: Job, server: Server | None, message: str) -> None:
        self.open -= 1
        self.ledger.failed(job, server, message)

    # ------------------------------------------------------------ the end

    def _finish(self, plan: Plan, started: str, t0: float) -> None:
        """Stop the slots, record what did not finish, write the run's record."""
        self.stop.set()
        for server in self.servers:
            server.wake_all()
        for slot in self.slots:
            slot.inbox.put(None)
        deadline = time.monotonic() + self.options.request_timeout * 2 + 5
        while self._busy() and time.monotonic() < deadline:
            try:
                self._handle(self.outcomes.get(timeout=0.1))
            except queue.Empty:
                continue
        for job in self.pending:
            self.ledger.unfinished(job, None, cancel=False)
        for server in self.servers:
            for job in self.waiting[server.url]:
                self.ledger.unfinished(job, server, cancel=self.options.interrupt)
        self.result.seconds = time.monotonic() - t0
        run = {
            "started": started,
            "executor": "comfyui",
            "servers": [s.url for s in self.servers],
            "invalid": dict(plan.invalid),
        }
        listening = {url: lst.ever_connected for url, lst in self.listeners.items()}
        self.ledger.close(self.servers, listening, run)


def run_queue(
    rows: Sequence[Row],
    options: QueueOptions,
    *,
    workflow: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> QueueResult:
    """Queue ``rows`` on ``options.servers``; results and manifest under ``options.out``.

    Resumes from an existing manifest in ``options.out``: rows finished with the same
    inputs are skipped, prompts still queued on a server are collected from it. ``stop``
    (set from another thread) ends the run like Ctrl-C.
    """
    dispatcher = Dispatcher(options, log=log)
    if stop is not None:
        threading.Thread(target=_watch, args=(stop, dispatcher), daemon=True).start()
    return dispatcher.run(rows, workflow)


def _watch(stop: threading.Event, dispatcher: Dispatcher) -> None:
    """End the run like Ctrl-C once ``stop`` is set (returns when the run ends anyway)."""
    while not stop.wait(0.05):
        if dispatcher.stop.is_set():
            return
    if not dispatcher.stop.is_set():
        dispatcher.result.stopped(dispatcher.log, "stop requested")
        dispatcher.stop.set()
