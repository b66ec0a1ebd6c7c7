"""The ranges a batch row is checked against before it is queued.

A server's ``/object_info`` is the truth for that server: the min/max of each input a
setting writes (:data:`.graph.TARGETS`), so a server running another version of the pack
is honoured; with several servers a row must fit all of them (it may go to any). Where no
server gave a setting's range (none answered, or none has the node) the pack's own applies
(:func:`facediffuser_core.batching.bounds.pack_limits`, from ``ranges.py``), named after the
pack node input that has it. Each :class:`Limit` names its source, so a refusal says whom
to believe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..batching.bounds import Limit, as_number
from ..batching.bounds import pack_limits as engine_limits
from ..node_names import NODE_IDS
from .graph import TARGETS, input_specs, spec_options


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
            low, high = as_number(options.get("min")), as_number(options.get("max"))
            if low is not None or high is not None:
                limits.append(Limit(setting, low, high, class_type, name, server))
    return limits


def pack_limits() -> list[Limit]:
    """The pack's ranges of the settings that write a pack node's input, each named after
    the first such input (the KSampler's; the SNF Guider shares its ranges)."""
    ranges = {limit.setting: limit for limit in engine_limits()}
    limits: dict[str, Limit] = {}
    for setting, pairs in TARGETS.items():
        for class_type, name in pairs:
            if class_type in NODE_IDS and setting in ranges and setting not in limits:
                limits[setting] = Limit(
                    setting, ranges[setting].low, ranges[setting].high, class_type, name
                )
    return list(limits.values())


def with_pack_limits(found: Iterable[Limit]) -> list[Limit]:
    """``found`` (the servers' ranges), then the pack's for the settings they do not cover."""
    found = list(found)
    covered = {limit.setting for limit in found}
    fallback = pack_limits()
    covered_by_node = covered | {limit.setting for limit in fallback}
    rest = [limit for limit in engine_limits() if limit.setting not in covered_by_node]
    return found + [limit for limit in fallback if limit.setting not in covered] + rest
