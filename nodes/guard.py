"""What every node of the pack gets at registration: inputs checked by name, no server paths.

ComfyUI drops unknown *literal* inputs of an API graph but hands unknown *links* (an extra
``person_5``) to the node's function, which then fails with a raw TypeError. A
``VALIDATE_INPUTS`` that takes ``**kwargs`` sees every linked input at validation, so the
name can be refused there (HTTP 400) with the list of inputs the node has. With ``**kwargs``
ComfyUI leaves the min/max and list checks of every input to the node, so they are done here
too, from ``INPUT_TYPES``, in ComfyUI's words. A node's own ``VALIDATE_INPUTS`` still runs
(with the arguments it names) and decides about the inputs it names.

Error text the UI shows (validation messages and exceptions) passes through
:func:`paths.redact`: server folders appear as ``models/facediffuser``, never absolutely.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

_GUARDED = "_facediffuser_guarded"


def _redact(text: str) -> str:
    try:
        from . import paths  # needs ComfyUI's folder_paths
    except ImportError:
        return text
    return paths.redact(text)


def declared_inputs(node_cls: type) -> dict[str, tuple]:
    """Every input ``node_cls`` declares (required, optional, hidden) -> its spec tuple."""
    spec = node_cls.INPUT_TYPES()
    inputs: dict[str, tuple] = {}
    for section in ("required", "optional", "hidden"):
        for name, value in spec.get(section, {}).items():
            inputs[name] = value if isinstance(value, tuple) else (value,)
    return inputs


def _shown_inputs(node_cls: type) -> str:
    spec = node_cls.INPUT_TYPES()
    required = list(spec.get("required", {}))
    optional = list(spec.get("optional", {}))
    text = ", ".join(required)
    if optional:
        text += f" (optional: {', '.join(optional)})"
    return text


def _value_problem(name: str, spec: tuple, value: Any) -> str | None:
    """ComfyUI's own list and range checks for one literal input (None: fine)."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        if value not in kind:
            listed = ", ".join(map(str, kind)) if len(kind) <= 20 else f"{len(kind)} entries"
            return f"{name}: {value!r} is not one of the choices ({listed})"
        return None
    if kind in ("INT", "FLOAT") and isinstance(value, (int, float)):
        if "min" in options and value < options["min"]:
            return f"{name}: value {value} is smaller than the minimum {options['min']}"
        if "max" in options and value > options["max"]:
            return f"{name}: value {value} is bigger than the maximum {options['max']}"
    return None


def check_inputs(
    node_cls: type, display: str, given: dict[str, Any], own_validator: Callable | None = None
) -> bool | str:
    """True, or the first problem of ``given``: unknown names, values, the node's own check."""
    declared = declared_inputs(node_cls)
    unknown = sorted(n for n in given if n not in declared)
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        return (
            f"'{display}' has no input {names}: remove it from the graph; the inputs of "
            f"this node are {_shown_inputs(node_cls)}"
        )
    own_args: list[str] = []
    if own_validator is not None:
        own_args = [a for a in inspect.getfullargspec(own_validator).args if a != "cls"]
    for name, value in given.items():
        if name in own_args or value is None:  # None: a link, checked by type, not value
            continue
        problem = _value_problem(name, declared[name], value)
        if problem:
            return problem
    if own_validator is not None:
        try:
            result = own_validator(**{a: given.get(a) for a in own_args})
        except Exception as exc:  # a validator that raises: its message, not a traceback
            return _redact(f"{type(exc).__name__}: {exc}")
        if result is not True:
            return _redact(str(result)) if isinstance(result, str) else result
    return True


def _redacted(exc: BaseException) -> None:
    """Replace server paths in ``exc``'s message in place (type and traceback are kept)."""
    exc.args = tuple(_redact(a) if isinstance(a, str) else a for a in exc.args)
    for attribute in ("filename", "filename2"):
        value = getattr(exc, attribute, None)
        if isinstance(value, str):
            setattr(exc, attribute, _redact(value))


def guard(node_cls: type, display: str) -> type:
    """Give ``node_cls`` the pack's input check and path-free errors (idempotent)."""
    if getattr(node_cls, _GUARDED, False):
        return node_cls
    own = getattr(node_cls, "VALIDATE_INPUTS", None)

    def validate(cls, **given):
        return check_inputs(cls, display, given, own)

    node_cls.VALIDATE_INPUTS = classmethod(validate)
    function = getattr(node_cls, node_cls.FUNCTION)

    @functools.wraps(function)
    def run(self, *args, **kwargs):
        try:
            return function(self, *args, **kwargs)
        except Exception as exc:
            _redacted(exc)
            raise

    setattr(node_cls, node_cls.FUNCTION, run)
    setattr(node_cls, _GUARDED, True)
    return node_cls
