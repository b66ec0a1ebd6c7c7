"""What a queue run records and prints: each row's outcome in the manifest and the result,
one line per row, the servers' throughput, and the run's closing record.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batching.console import Console
from ..batching.manifest import MANIFEST, Manifest, RunResult, now
from .client import ServerUnreachable
from .plan import Job, Plan
from .server import Server
from .slot import Outcome


@dataclass
class QueueResult(RunResult):
    servers: dict[str, dict] = field(default_factory=dict)  # per server: counts, throughput


def host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


class Ledger:
    """The manifest, the result and the console of one queue run."""

    def __init__(self, out: Path, log: Callable[[str], None] | None = None):
        self.out = Path(out)
        self.manifest = Manifest(self.out)
        self.result = QueueResult(manifest=self.manifest.path)
        self.console = Console(log)
        self.log, self.say = self.console.log, self.console.say

    def planned(self, plan: Plan) -> None:
        """Report what planning found: invalid rows, rows done before, changed rows."""
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

    def released(self, job: Job, reason: str) -> None:
        self.manifest.update(job.entry, status="pending", note=reason)

    def failed(self, job: Job, server: Server | None, message: str) -> None:
        self.console.advance()
        where = server.url if server else None
        self.manifest.update(
            job.entry, status="failed", error=message, finished_at=now(), server=where
        )
        self.result.failed.append(job.key)
        if server is not None:
            server.stats["failed"] += 1
        self.say(f"failed  {job.key}  {host(where) if where else '-'}  {message}")

    def done(self, job: Job, server: Server, outcome: Outcome) -> None:
        self.console.advance()
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

    def unfinished(self, job: Job, server: Server | None, cancel: bool) -> None:
        """A job the run stopped before it finished: never started, it stays pending; on a
        server, it stays submitted (a resume collects it) or, with ``cancel``, is
        cancelled there."""
        self.result.pending.append(job.key)
        if job.prompt_id is None or server is None:
            self.manifest.update(job.entry, status="pending")
        elif cancel and server.alive:
            try:
                server.client.cancel([job.prompt_id])
            except ServerUnreachable:  # best effort: the run is ending anyway
                return
            self.manifest.update(job.entry, status="interrupted")

    def progress(self, servers: Sequence[Server], busy: Mapping[str, list[Job]]) -> None:
        """Each server's state beside the bar: its current step, busy, idle or down."""
        if self.console.bar is None:
            return
        parts = []
        for server in servers:
            steps = [server.progress.get(j.prompt_id or "") for j in busy.get(server.url, [])]
            steps = [s for s in steps if s]
            if not server.alive:
                state = "down"
            elif steps:
                state = f"{steps[0][0]}/{steps[0][1]}"
            else:
                state = "busy" if busy.get(server.url) else "idle"
            parts.append(f"{host(server.url)} {state}")
        self.console.status(" | ".join(parts))

    def close(
        self, servers: Sequence[Server], listening: Mapping[str, bool], run: dict[str, Any]
    ) -> None:
        """The run's record and the servers' throughput, in the manifest and the result."""
        self.console.close()
        minutes = max(self.result.seconds, 1e-6) / 60.0
        for server in servers:
            stats = dict(server.stats, execution_s=round(server.stats["execution_s"], 3))
            stats["items_per_min"] = round(stats["done"] / minutes, 2)
            stats["websocket"] = listening.get(server.url, False)
            if not server.alive:
                stats["unreachable"] = server.reason
            self.result.servers[server.url] = stats
        run.update(
            finished=now(),
            seconds=round(self.result.seconds, 3),
            interrupted=self.result.interrupted,
            server_stats=self.result.servers,
        )
        self.manifest.add_run(run, servers=self.result.servers)


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
