"""The numeric ranges a batch row is checked against before anything is queued.

A server's ``/object_info`` is the truth for that server: the min/max of each input a
setting writes (:data:`.graph.TARGETS`), so a server running another version of the pack
is honoured. Where no server gave a setting's range (none answered, or none has the
node), the pack's own table is used (:mod:`facediffuser_core.ranges`, from which the nodes
build their widgets). Each range names where it comes from, so a refusal says whom to
believe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..node_names import NODE_IDS
from ..ranges import NUMBERS
from .errors import QueueError
from .graph import TARGETS, input_specs, spec_options

_U64 = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Limit:
    """The range one setting must keep (a missing bound is None), and who says so."""

    setting: str
    low: float | None
    high: float | None
    node_id: str  # the input that has the range: node_id.input
    input: str
    server: str | None = None  # None: the pack's own table

    @property
    def source(self) -> str:
        where = f"{self.node_id}.{self.input}"
        if self.server is None:
            return f"{where} of this Face-diffuser version (no server gave its range)"
        return f"{where} on server {self.server}"

    def allows(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.low is None:
            return f"at most {_show(self.high)}"
        if self.high is None:
            return f"at least {_show(self.low)}"
        return f"{_show(self.low)} to {_show(self.high)}"


def _show(number: Any) -> str:
    if isinstance(number, int):
        return "2^64-1" if number == _U64 else str(number)
    return f"{number:g}" if isinstance(number, float) else str(number)


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if ok else None


def server_limits(
    graph: Mapping[str, Any], object_info: Mapping[str, Any], server: str
) -> list[Limit]:
    """The ranges ``server``'s ``/object_info`` gives the inputs each setting writes in
    ``graph`` (only node classes the graph has; inputs without min/max give none)."""
    present = {node.get("class_type") for node in graph.values()}
    limits = []
    for setting, pairs in TARGETS.items():
        for class_type, name in pairs:
            info = object_info.get(class_type)
            if class_type not in present or not info:
                continue
            options = spec_options(dict(input_specs(info)).get(name) or [])
            low, high = _number(options.get("min")), _number(options.get("max"))
            if low is not None or high is not None:
                limits.append(Limit(setting, low, high, class_type, name, server))
    return limits


def pack_limits() -> list[Limit]:
    """The pack's own ranges (:data:`facediffuser_core.ranges.NUMBERS`), one per setting
    that writes a pack node's numeric input: what applies when no server gave one."""
    limits: dict[str, Limit] = {}
    for setting, pairs in TARGETS.items():
        for class_type, name in pairs:
            if class_type in NODE_IDS and name in NUMBERS and setting not in limits:
                spec = NUMBERS[name]
                limits[setting] = Limit(setting, spec["min"], spec["max"], class_type, name)
    return list(limits.values())


def with_pack_limits(found: Iterable[Limit]) -> list[Limit]:
    """``found`` (the servers' ranges) plus the pack's for the settings they do not cover."""
    found = list(found)
    covered = {limit.setting for limit in found}
    return found + [limit for limit in pack_limits() if limit.setting not in covered]


def out_of_range(
    settings: Mapping[str, Any], limits: Iterable[Limit]
) -> tuple[Limit, float] | None:
    """The first limit a value of ``settings`` breaks, with that value; None if none."""
    for limit in limits:
        value = _number(settings.get(limit.setting))
        if value is not None and not limit.allows(value):
            return limit, value
    return None


def check_limits(settings: Mapping[str, Any], limits: Iterable[Limit]) -> None:
    """QueueError naming the setting, its value, the allowed range and its source."""
    broken = out_of_range(settings, limits)
    if broken is not None:
        limit, value = broken
        raise QueueError(
            f"{limit.setting} {_show(value)} is out of range: {limit.source} takes "
            f"{limit.describe()}; give a value in that range"
        )
