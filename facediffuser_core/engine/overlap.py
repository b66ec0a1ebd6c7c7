"""Running the fusion stage's two model calls at the same time.

In stage 2 the TDM and SDM calls are independent until SNF combines them. On a GPU they can
overlap on two CUDA streams (useful when one batch-of-two call does not fill the device);
elsewhere two threads stand in, which keeps the code path exercised and bitwise identical.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class ConcurrentPair:
    """Runs two callables concurrently; use as a context manager (it owns a thread or streams)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._streams: tuple[Any, Any] | None = None
        self._pool: ThreadPoolExecutor | None = None
        if self._cuda:
            self._streams = (torch.cuda.Stream(self.device), torch.cuda.Stream(self.device))
        else:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facediffuser")

    def __enter__(self) -> ConcurrentPair:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def run(self, first: Callable[[], T], second: Callable[[], T]) -> tuple[T, T]:
        """``(first(), second())``, computed concurrently; results are ready on return."""
        if self._streams is None:
            assert self._pool is not None
            pending = self._pool.submit(first)
            other = second()
            return pending.result(), other
        current = torch.cuda.current_stream(self.device)
        results = []
        for stream, fn in zip(self._streams, (first, second), strict=True):
            stream.wait_stream(current)  # inputs prepared on the current stream
            with torch.cuda.stream(stream):
                results.append(fn())
        for stream in self._streams:
            current.wait_stream(stream)
        for result in results:  # tensors made on a side stream are now used on this one
            for tensor in result if isinstance(result, tuple | list) else (result,):
                if isinstance(tensor, torch.Tensor):
                    tensor.record_stream(current)
        return results[0], results[1]
