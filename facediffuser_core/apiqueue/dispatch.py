"""The dispatcher: it hands each job to the least busy server with a free slot, records
every outcome in the manifest, and stops cleanly (:func:`run_queue`).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batching.manifest import MANIFEST, FileDigests, Manifest, RunResult, now
from ..batching.model import Row
from .client import DEFAULT_SERVER, ServerUnreachable, server_url
from .graph import QueueError
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


@dataclass
class QueueResult(RunResult):
    servers: dict[str, dict] = field(default_factory=dict)  # per server: counts, throughput


def host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


class Dispatcher:
    """One run of the queue; see :func:`run_queue`."""

    def __init__(self, options: QueueOptions, log: Callable[[str], None] | None = None):
        self.options = options
        self.out = Path(options.out)
        self.manifest = Manifest(self.out)
        self.digests = FileDigests()
        self.stop = threading.Event()
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        self.result = QueueResult(manifest=self.manifest.path)
        self.client_id = "facediffuser-queue-" + uuid.uuid4().hex[:12]
        self._log, self.bar = log, None
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

    # ------------------------------------------------------------ output

    def log(self, text: str, stream: Any = None) -> None:
        if self._log is not None:
            self._log(text)
        elif self.bar is not None:
            self.bar.write(text, file=stream or sys.stderr)
        else:
            print(text, file=stream or sys.stderr, flush=True)

    def say(self, text: str) -> None:
        self.log(text, sys.stdout)

    # ------------------------------------------------------------ the run

    def run(self, rows: Sequence[Row], workflow: str | os.PathLike | None) -> QueueResult:
        started, t0 = now(), time.monotonic()
        self._reach()
        planner = Planner(workflow, self.servers, self.digests)
        urls = {s.url for s in self.servers if s.alive}
        single = len(rows) == 1 and not rows[0].line
        plan = make_plan(rows, self.manifest, planner, urls, single=single)
        self._report(plan)
        self._start(plan)
        try:
            self._loop()
        except KeyboardInterrupt:
            self.result.interrupted = True
            self.log("interrupted: stopping (the manifest keeps what finished)")
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

    def _report(self, plan: Plan) -> None:
        for key, error in plan.invalid.items():
            self.result.invalid.append(key)
            self.say(f"invalid {key}  {error}")
        for key, error in plan.failed.items():
            self.result.failed.append(key)
            self.say(f"failed  {key}  -  {error}")
        for key in plan.changed:
            self.log(f"item {key}: its inputs changed since the last run; running it again")
        self.result.skipped = list(plan.skipped)
        if plan.skipped:
            self.say(
                f"skipped {len(plan.skipped)} item(s) already done (manifest {self.manifest.path})"
            )

    def _start(self, plan: Plan) -> None:
        self.pending.extend(plan.jobs)
        for job in plan.recovering:
            self.waiting[job.server or ""].append(job)
        self.open = len(plan.jobs) + len(plan.recovering)
        settings = SlotSettings(
            self.out, self.client_id, self.options.poll, self.options.timeout,
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
        if self.options.progress and self.open:
            from tqdm import tqdm

            self.bar = tqdm(total=self.open, unit="item", dynamic_ncols=True, file=sys.stderr)

    def _loop(self) -> None:
        while self.open > 0 and not self.stop.is_set():
            self._assign()
            if not any(s.alive for s in self.servers) and not self._busy():
                self._fail_pending()
                return
            try:
                outcome = self.outcomes.get(timeout=0.1)
            except queue.Empty:
                self._show_progress()
                continue
            self._handle(outcome)

    def _busy(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.job is not None]

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
                    self._finish_job(job, None, "failed", self._nowhere(job))
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
            self._finish_job(job, None, "failed", self._nowhere(job))

    # ------------------------------------------------------------ outcomes

    def _handle(self, outcome: Outcome) -> None:
        job, server = outcome.job, outcome.slot.server
        outcome.slot.job = None
        if outcome.kind == "done":
            self._finish_job(job, server, "done", outcome=outcome)
        elif outcome.kind == "failed":
            self._finish_job(job, server, "failed", outcome.message)
        elif outcome.kind == "cannot_run":
            server.cannot_run[job.workflow.name] = outcome.message
            self.log(f"server {server.url} cannot run {job.workflow.name}: {outcome.message}")
            if any(s.can_run(job.workflow) for s in self.servers):
                self._release(job, f"{server.url} cannot run {job.workflow.name}")
            else:
                message = f"no server can run {job.workflow.name}: {outcome.message}"
                self._finish_job(job, server, "failed", message)
        elif outcome.kind == "release":
            self._release(job, outcome.message)
        else:  # stopped: recorded when the run ends
            self.waiting[server.url].appendleft(job)

    def _release(self, job: Job, reason: str) -> None:
        job.reset()
        self.manifest.update(job.entry, status="pending", note=reason)
        self.pending.appendleft(job)

    def _finish_job(
        self,
        job: Job,
        server: Server | None,
        status: str,
        message: str = "",
        outcome: Outcome | None = None,
    ) -> None:
        self.open -= 1
        if self.bar is not None:
            self.bar.update(1)
        if status == "failed":
            self.manifest.update(
                job.entry, status="failed", error=message, finished_at=now(),
                server=server.url if server else None,
            )  # fmt: skip
            self.result.failed.append(job.key)
            if server is not None:
                server.stats["failed"] += 1
            self.say(f"failed  {job.key}  {host(server.url) if server else '-'}  {message}")
            return
        assert server is not None and outcome is not None
        wait_s = time.monotonic() - job.submitted if job.submitted else None
        record = self.manifest.update(
            job.entry,
            status="done",
            outputs=outcome.paths,
            finished_at=now(),
            timings={
                "submit_s": round(job.submit_s, 3),
                "wait_s": round(wait_s, 3) if wait_s is not None else None,
                "execution_s": self.manifest.entries[job.entry].get("execution_s"),
                "download_s": round(outcome.download_s, 3),
            },
        )
        server.stats["done"] += 1
        self.result.done.append(job.key)
        shown = f"{wait_s:5.1f} s" if wait_s is not None else "      "
        first = str(self.out / outcome.paths[0]) if outcome.paths else "(no images)"
        more = f" (+{len(outcome.paths) - 1})" if len(outcome.paths) > 1 else ""
        self.say(
            f"done    {job.key}  {host(server.url)}  seed {record.get('seed')}  {shown}  "
            f"{first}{more}"
        )

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
        self._record_leftovers()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.result.seconds = time.monotonic() - t0
        self.result.servers = self._server_report()
        run = {
            "started": started,
            "finished": now(),
            "executor": "comfyui",
            "servers": [s.url for s in self.servers],
            "seconds": round(self.result.seconds, 3),
            "interrupted": self.result.interrupted,
            "server_stats": self.result.servers,
            "invalid": dict(plan.invalid),
        }
        self.manifest.add_run(run, servers=self.result.servers)

    def _record_leftovers(self) -> None:
        """Jobs never started stay pending; jobs on a server stay submitted (a resume
        collects them) or, with ``interrupt``, are cancelled there."""
        for job in self.pending:
            self.result.pending.append(job.key)
            self.manifest.update(job.entry, status="pending")
        for server in self.servers:
            for job in self.waiting[server.url]:
                self.result.pending.append(job.key)
                if job.prompt_id is None:
                    self.manifest.update(job.entry, status="pending")
                elif self.options.interrupt and server.alive:
                    try:
                        server.client.cancel([job.prompt_id])
                    except ServerUnreachable:
                        continue
                    self.manifest.update(job.entry, status="interrupted")

    def _server_report(self) -> dict[str, dict]:
        minutes = max(self.result.seconds, 1e-6) / 60.0
        report = {}
        for server in self.servers:
            stats = dict(server.stats)
            stats["execution_s"] = round(stats["execution_s"], 3)
            stats["items_per_min"] = round(stats["done"] / minutes, 2)
            listener = self.listeners.get(server.url)
            stats["websocket"] = bool(listener and listener.ever_connected)
            if not server.alive:
                stats["unreachable"] = server.reason
            report[server.url] = stats
        return report

    def _show_progress(self) -> None:
        if self.bar is None:
            return
        parts = []
        for server in self.servers:
            steps = [server.progress.get(s.job.prompt_id or "") for s in self._busy()]
            steps = [s for s in steps if s]
            if not server.alive:
                parts.append(f"{host(server.url)} down")
            elif steps:
                parts.append(f"{host(server.url)} {steps[0][0]}/{steps[0][1]}")
            else:
                busy = any(s.server is server for s in self._busy())
                parts.append(f"{host(server.url)} {'busy' if busy else 'idle'}")
        self.bar.set_postfix_str(" | ".join(parts), refresh=True)


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
        dispatcher.result.interrupted = True
        dispatcher.log("stop requested: stopping (the manifest keeps what finished)")
        dispatcher.stop.set()


def summary(result: QueueResult, out: Path) -> str:
    """The lines printed at the end of a run: counts, per-server throughput, manifest."""
    lines = [result.counts()]
    for url, stats in result.servers.items():
        line = (
            f"  {url}  {stats['done']} done, {stats['failed']} failed, "
            f"{stats['execution_s']:.1f} s executing, {stats['items_per_min']:.1f} items/min"
        )
        if "unreachable" in stats:
            line += f"  (unreachable: {stats['unreachable']})"
        lines.append(line)
    lines.append(f"manifest {Path(out) / MANIFEST}")
    return "\n".join(lines)
