"""``facediffuser batch``'s run: plan the rows against the manifest, render them in a pool of
workers (in-process, or Ray actors: :mod:`.raypool`), write each row's images and record as
it finishes. A run stopped at any point (Ctrl-C, a crash) resumes: rows recorded done are
skipped, nothing finished is rendered again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..batching.bounds import check_limits, pack_limits
from ..batching.console import Console
from ..batching.manifest import (
    FileDigests,
    Manifest,
    RunResult,
    atomic_write,
    entry_name,
    input_digest,
    now,
)
from ..batching.model import Row, regroup
from ..errors import FaceDiffuserError
from .render import Models, Renderer, Task, generate_settings, task_for


@dataclass(frozen=True)
class Pending:
    """A row to render and its manifest entry."""

    entry: str
    row: Row

    def task(self) -> Task:
        """The task a worker renders (the photos read now: only rows in flight hold them)."""
        people = self.row.settings["references"]
        photos = [[person] if isinstance(person, str) else person for person in people]
        return task_for(self.entry, self.row.key, self.row.settings, photos)


@dataclass(frozen=True)
class Rendered:
    images: list[bytes]  # PNG files
    seconds: float
    worker: str


class Pool(Protocol):
    """Workers that render pending rows and yield each result (or error) as it finishes."""

    description: str

    def run(
        self, jobs: Iterable[Pending]
    ) -> Iterator[tuple[Pending, Rendered | BaseException]]: ...

    def close(self) -> None: ...


class LocalPool:
    """One worker in this process: the models loaded once, rows rendered one by one."""

    def __init__(self, models: Models, renderer: Callable[[Models], Any] = Renderer):
        self.renderer = renderer(models)
        self.description = f"in-process on {models.device}"

    def run(self, jobs: Iterable[Pending]) -> Iterator[tuple[Pending, Rendered | BaseException]]:
        for job in jobs:
            t0 = time.perf_counter()
            try:
                images = self.renderer.render(job.task())
            except Exception as exc:  # one row's failure (a bug too) must not end the batch
                yield job, exc
                continue
            yield job, Rendered(images, time.perf_counter() - t0, "local")

    def close(self) -> None:
        close = getattr(self.renderer, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class BatchOptions:
    out: Path
    models: Models
    progress: bool = True


def describe(error: BaseException) -> str:
    """A row's failure as one line (a user-facing error as it is; others with their type)."""
    cause = getattr(error, "cause", None) or error  # Ray wraps a worker's exception
    if isinstance(cause, FaceDiffuserError):
        return str(cause)
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause) else ''}"


class Driver:
    """One run of ``facediffuser batch`` (see the module)."""

    def __init__(self, options: BatchOptions, log: Callable[[str], None] | None = None):
        self.options = options
        self.out = Path(options.out)
        self.manifest = Manifest(self.out)
        self.digests = FileDigests()
        self.result = RunResult(manifest=self.manifest.path)
        self.invalid: dict[str, str] = {}
        self.console = Console(log)
        self.log, self.say = self.console.log, self.console.say

    # ------------------------------------------------------------ planning

    def _entry(self, row: Row) -> str:
        """The row's entry (validated for the engine: ranges, stage steps)."""
        check_limits(row.settings, pack_limits())
        generate_settings(row.settings)
        shas = [self.digests(p) for p in row.photos]
        payload = {
            **self.options.models.identity(),
            "settings": {k: v for k, v in row.settings.items() if k != "references"},
            "references": regroup(row.settings["references"], shas),
        }
        digest = input_digest(payload)
        record = self.manifest.find(row.key, digest)
        if record is None and self.manifest.of_row(row.key):
            self.log(f"item {row.key}: its inputs changed since the last run; running it again")
        entry = entry_name(row.key, digest)
        self.manifest.stage(
            entry, id=row.key, digest=digest, line=row.line, inputs=row.settings, executor="engine"
        )
        return entry

    def plan(self, rows: Sequence[Row]) -> list[Pending]:
        """The rows still to render; invalid and done ones reported."""
        pending = []
        for row in rows:
            if row.error:
                self._invalid(row.key, row.error)
                continue
            try:
                entry = self._entry(row)
            except FaceDiffuserError as exc:
                self._invalid(row.key, f"line {row.line}: {exc}" if row.line else str(exc))
                continue
            if self.manifest.entries[entry].get("status") == "done":
                self.result.skipped.append(row.key)
                continue
            self.manifest.stage(entry, status="pending", outputs=[], error=None)
            pending.append(Pending(entry, row))
        self.manifest.save()
        if self.result.skipped:
            self.say(f"skipped {len(self.result.skipped)} item(s) already done")
        return pending

    def _invalid(self, key: str, error: str) -> None:
        self.invalid[key] = error
        self.result.invalid.append(key)
        self.say(f"invalid {key}  {error}")

    # ------------------------------------------------------------ running

    def drive(self, pool: Pool, pending: Sequence[Pending]) -> None:
        """Render ``pending`` in ``pool``, recording each row as it finishes."""
        self.result.pending = [job.row.key for job in pending]
        self.console.start(len(pending), self.options.progress, pool.description)
        try:
            for job, outcome in pool.run(pending):
                self._record(job, outcome)
        finally:
            self.console.close()

    def _record(self, job: Pending, outcome: Rendered | BaseException) -> None:
        self.result.pending.remove(job.row.key)
        self.console.advance()
        if not isinstance(outcome, Rendered):
            message = describe(outcome)
            self.manifest.update(job.entry, status="failed", error=message, finished_at=now())
            self.result.failed.append(job.row.key)
            self.say(f"failed  {job.row.key}  {message}")
            return
        paths = []
        for n, png in enumerate(outcome.images, 1):
            atomic_write(self.out / job.entry / f"image_{n}.png", png)
            paths.append(f"{job.entry}/image_{n}.png")
        self.manifest.update(
            job.entry,
            status="done",
            outputs=paths,
            finished_at=now(),
            seconds=round(outcome.seconds, 3),
            worker=outcome.worker,
            seed=job.row.settings.get("seed", 0),
        )
        self.result.done.append(job.row.key)
        more = f" (+{len(paths) - 1})" if len(paths) > 1 else ""
        self.say(
            f"done    {job.row.key}  {outcome.worker}  seed {job.row.settings.get('seed', 0)}  "
            f"{outcome.seconds:5.1f} s  {self.out / paths[0]}{more}"
        )

    def finish(self, started: str, t0: float, pool: str) -> None:
        self.result.seconds = time.monotonic() - t0
        run = {
            "started": started,
            "finished": now(),
            "executor": "engine",
            "pool": pool,
            "seconds": round(self.result.seconds, 3),
            "interrupted": self.result.interrupted,
            "invalid": dict(self.invalid),
        }
        self.manifest.add_run(run)


def run_batch(
    rows: Sequence[Row],
    options: BatchOptions,
    pool: Callable[[], Pool] | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Render ``rows`` with the headless engine; images and manifest under ``options.out``.

    ``pool`` makes the workers (default: :class:`LocalPool`, in this process); it is made
    only when a row is left to render, so a finished batch loads no model. Resumes from an
    existing manifest: rows done with the same inputs (and models) are skipped.
    """
    driver = Driver(options, log)
    started, t0 = now(), time.monotonic()
    description = "-"
    try:
        pending = driver.plan(rows)
        if pending:
            workers = pool() if pool is not None else LocalPool(options.models)
            description = workers.description
            try:
                driver.drive(workers, pending)
            finally:
                workers.close()
    except KeyboardInterrupt:
        driver.result.stopped(driver.log)
    finally:
        driver.finish(started, t0, description)
    return driver.result
