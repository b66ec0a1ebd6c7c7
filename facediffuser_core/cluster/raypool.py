"""``facediffuser batch --ray``: rows rendered by long-lived Ray actors, one per GPU (or per
``--cpus-per-worker`` CPUs), each loading the two models once.

Every worker keeps two rows in flight (the next one's photos arrive while it renders), so it
never waits for the driver; results come back as they finish and the driver records them.
A worker that dies (killed, out of memory, its node lost) is restarted by Ray and its rows
retried there, at most ``RETRIES`` times each; a row that kills its worker every time fails
with that reason. Ray is an optional extra (``pip install "facediffuser[cluster]"``): only
this module imports it, and nothing in the engine or the nodes imports this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InputError
from .driver import Pending, Rendered
from .render import Models, Renderer, Task, worker_count

RETRIES = 2  # times a row is retried on a restarted worker
IN_FLIGHT = 2  # rows queued on one worker at a time


def require_ray() -> Any:
    """The ``ray`` module, or an InputError with the install line."""
    try:
        import ray
    except ImportError:
        raise InputError(
            '--ray needs Ray: pip install "facediffuser[cluster]" (or pip install ray) in this '
            "environment and on every node of the cluster"
        ) from None
    return ray


@dataclass(frozen=True)
class Cluster:
    """The cluster this driver is connected to: its CPUs and GPUs."""

    address: str
    cpus: float
    gpus: float


def connect(address: str) -> Cluster:
    """Join the Ray cluster at ``address`` (``auto``: Ray's own rule: ``RAY_ADDRESS``, a
    cluster started on this machine with ``ray start``, else a new one here), unless this
    process is connected already."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(
                address=None if address == "auto" else address,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(
                f"--ray {address}: no Ray cluster could be joined ({exc}): start one with "
                "'ray start --head' and give its address (or auto)"
            ) from None
    resources = ray.cluster_resources()
    return Cluster(address, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)))


class RenderWorker:
    """A Ray actor's state: the models, loaded once, and the rows it renders."""

    def __init__(self, models: Models, renderer: Callable[[Models], Any], label: str):
        self.renderer = renderer(models)
        self.label = label

    def ready(self) -> str:
        return self.label

    def render(self, task: Task) -> Rendered:
        t0 = time.perf_counter()
        images = self.renderer.render(task)
        return Rendered(images, time.perf_counter() - t0, self.label)


class WorkerLost(Exception):
    """A row's worker died every time it rendered it."""


class RayPool:
    """The workers of one run on a Ray cluster (see the module)."""

    def __init__(
        self,
        cluster: Cluster,
        models: Models,
        *,
        workers: int | None = None,
        renderer: Callable[[Models], Any] = Renderer,
    ):
        ray = require_ray()
        gpu = models.device != "cpu"
        count = int(cluster.gpus) if gpu else worker_count(cluster.cpus, models.threads, None)
        count = min(count, workers) if workers else count
        if count < 1:
            raise InputError(
                f"the Ray cluster at {cluster.address} has no GPU for --device {models.device}: "
                "use --device cpu, or add GPU nodes"
            )
        actor = ray.remote(
            num_cpus=0 if gpu else models.threads,
            num_gpus=1 if gpu else 0,
            max_restarts=-1,
            max_task_retries=RETRIES,
        )(RenderWorker)
        device = replace(models, device="cuda") if gpu else models
        self.actors = [actor.remote(device, renderer, f"worker {i + 1}") for i in range(count)]
        kind = "GPU" if gpu else f"{models.threads}-CPU"
        self.description = f"Ray: {count} {kind} worker(s)"
        self.ray = ray

    def run(self, jobs: Iterable[Pending]) -> Iterator[tuple[Pending, Rendered | BaseException]]:
        ray, queue = self.ray, iter(jobs)
        inflight: dict[Any, tuple[Pending, Any]] = {}

        def feed(actor: Any) -> None:
            job = next(queue, None)
            if job is not None:
                inflight[actor.render.remote(job.task())] = (job, actor)

        for _ in range(IN_FLIGHT):
            for actor in self.actors:
                feed(actor)
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            job, actor = inflight.pop(ref)
            feed(actor)
            yield job, self._outcome(ref)

    def _outcome(self, ref: Any) -> Rendered | BaseException:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as exc:
            return exc  # the row's own error: describe() reads its cause
        except exceptions.RayActorError:
            return WorkerLost(
                f"its worker died {RETRIES + 1} times rendering it (out of memory, or killed)"
            )

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
