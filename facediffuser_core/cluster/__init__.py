"""``facediffuser batch``: a batch rendered by the headless engine, in this process or by
long-lived workers on a Ray cluster.

``render`` (a worker's models and one row -> PNG images), ``driver`` (plan against the
manifest, record rows as they finish: :func:`run_batch`), ``raypool`` (Ray actors; Ray is
the optional extra ``facediffuser[cluster]``, imported only there). The rows and the
manifest are :mod:`facediffuser_core.batching`'s, as for ``facediffuser queue``. The engine
and the nodes never import this package.
"""

from __future__ import annotations

from .driver import BatchOptions, LocalPool, run_batch
from .render import Models, Renderer, Task

__all__ = ["BatchOptions", "LocalPool", "Models", "Renderer", "Task", "run_batch"]
