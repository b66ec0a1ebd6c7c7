"""The ranges a batch row's numbers must keep: :class:`Limit`, and the pack's own from the
one table (:mod:`facediffuser_core.ranges`). ``facediffuser batch`` checks rows against the
pack's; ``facediffuser queue`` against each server's ``/object_info`` first
(``apiqueue/limits.py``). Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..ranges import LATENT_SIZE, NUMBERS

INT_KEYS = ("seed", "steps", "width", "height", "batch_size")
FLOAT_KEYS = ("cfg", "scene_end", "fusion_end")
_U64 = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Limit:
    """The range one setting must keep (a missing bound is None), and who says so.

    ``node_id``/``input`` name the node input that has the range (None for the pack's own
    table in general); ``server`` the server whose ``/object_info`` gave it.
    """

    setting: str
    low: float | None
    high: float | None
    node_id: str | None = None
    input: str | None = None
    server: str | None = None

    @property
    def source(self) -> str:
        if self.node_id is None:
            return "Face-diffuser"
        where = f"{self.node_id}.{self.input}"
        if self.server is None:
            return f"{where} of this Face-diffuser version (no server gave its range)"
        return f"{where} on server {self.server}"

    def allows(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.low is None:
            return f"at most {show_number(self.high)}"
        if self.high is None:
            return f"at least {show_number(self.low)}"
        return f"{show_number(self.low)} to {show_number(self.high)}"


def show_number(number: Any) -> str:
    if isinstance(number, int):
        return "2^64-1" if number == _U64 else str(number)
    return f"{number:g}" if isinstance(number, float) else str(number)


def as_number(value: Any) -> float | None:
    """``value`` if it is an int or float (not a bool), else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if ok else None


def pack_limits() -> list[Limit]:
    """Every numeric setting's range in this version of the pack (ranges.py)."""
    table = {**NUMBERS, **LATENT_SIZE}
    return [Limit(k, table[k]["min"], table[k]["max"]) for k in (*INT_KEYS, *FLOAT_KEYS)]


def out_of_range(
    settings: Mapping[str, Any], limits: Iterable[Limit]
) -> tuple[Limit, float] | None:
    """The first limit a value of ``settings`` breaks, with that value; None if none."""
    for limit in limits:
        value = as_number(settings.get(limit.setting))
        if value is not None and not limit.allows(value):
            return limit, value
    return None


def range_message(limit: Limit, value: float, name: str | None = None) -> str:
    return (
        f"{name or limit.setting} {show_number(value)} is out of range: {limit.source} takes "
        f"{limit.describe()}; give a value in that range"
    )


def check_limits(settings: Mapping[str, Any], limits: Iterable[Limit]) -> None:
    """InputError naming the setting, its value, the allowed range and its source."""
    broken = out_of_range(settings, limits)
    if broken is not None:
        raise InputError(range_message(*broken))
