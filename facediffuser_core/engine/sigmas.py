"""From a host's sigma (ComfyUI calls the model with a sigma, not a step) back to the step
index, so the stage boundaries apply to any sampler's schedule.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

from ..errors import InputError
from .stages import Stage, stage_for_step


class SigmaSteps:
    """The step of any sigma of one schedule, with the schedule prepared once per run.

    ``schedule_sigmas`` is the descending schedule including the final sigma (length
    steps + 1). A scheduled sigma ``sigma_i`` maps to step ``i``; a sigma between two
    scheduled ones (SDE or second-order samplers) maps to the step of the interval
    ``[sigma_{i+1}, sigma_i]`` it lies in; the final sigma maps to the last step.
    """

    def __init__(self, schedule_sigmas: Sequence[float] | torch.Tensor) -> None:
        sigmas = torch.as_tensor(schedule_sigmas, dtype=torch.float64).flatten()
        if sigmas.numel() < 2:
            raise InputError("a sigma schedule needs at least two entries (start and end)")
        self._ascending_starts = sorted(float(s) for s in sigmas[:-1])
        self.steps = sigmas.numel() - 1

    def __call__(self, sigma: float | torch.Tensor) -> int:
        s = float(torch.as_tensor(sigma).flatten()[0]) if not isinstance(sigma, float) else sigma
        # starts >= s (1 - 1e-5), counted from the top of the descending schedule
        at_or_above = self.steps - bisect.bisect_left(self._ascending_starts, s * (1.0 - 1e-5))
        return min(max(at_or_above - 1, 0), self.steps - 1)


def step_index_for_sigma(sigma: float | torch.Tensor, schedule_sigmas: torch.Tensor) -> int:
    """The step whose interval ``[sigma_{i+1}, sigma_i]`` contains ``sigma`` (see SigmaSteps)."""
    return SigmaSteps(schedule_sigmas)(sigma)


def step_indices(
    timesteps: Sequence[int] | torch.Tensor, step_count: str = "distinct"
) -> list[int]:
    """Step index of each entry of a diffusers scheduler's ``timesteps``.

    ``step_count="distinct"`` (the paper's meaning): first-order schedulers (DDIM) list each
    timestep once, so entry ``i`` is step ``i``; second-order ones (Heun, KDPM2) and PNDM
    repeat timesteps, and the k-th distinct value is step k, which matches
    :func:`step_index_for_sigma` for sigma-based hosts. ``step_count="loop"`` (the authors'
    release): entry ``i`` is step ``i``, repeats included.
    """
    values = [int(t) for t in torch.as_tensor(timesteps).flatten().tolist()]
    if step_count == "loop":
        return list(range(len(values)))
    if step_count != "distinct":
        raise InputError(f"step_count must be 'distinct' or 'loop', got {step_count!r}")
    seen: dict[int, int] = {}
    out = []
    for value in values:
        if value not in seen:
            seen[value] = len(seen)
        out.append(seen[value])
    return out


def stage_entries(
    timesteps: Sequence[int] | torch.Tensor,
    start_merge_step: int,
    final_step: int,
    step_count: str = "distinct",
) -> list[Stage]:
    """The stage of each entry of a scheduler's timestep list (what the sampling loop runs)."""
    return [
        stage_for_step(step, start_merge_step, final_step)
        for step in step_indices(timesteps, step_count)
    ]
