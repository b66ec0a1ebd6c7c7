"""What every node of the pack gets at registration: inputs checked by name, no server paths.

ComfyUI drops unknown *literal* inputs of an API graph but hands unknown *links* (an extra
``person_5``) to the node's ``execute``, which then fails with a raw TypeError. A V3
``validate_inputs(cls, **given)`` sees every linked input at validation (dynamic inputs
nested: ``people={"person_1": ...}``, ``mode={"mode": "soft", "temperature": 1.0}``), so the
name can be refused there (HTTP 400) with the list of inputs the node has. With ``**given``
ComfyUI leaves the min/max and list checks of every input to the node, so they are done here
too, from the schema, in ComfyUI's words. A node's own ``validate_inputs`` still runs (with
the arguments it names) and decides about the inputs it names. Names a node lists in
``LEGACY_INPUTS`` (the four ``person_N`` of graphs saved before the people list) are accepted
and handled by the node.

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


def _autogrow_names(inp) -> list[str] | None:
    template = getattr(inp, "template", None)
    names = getattr(template, "names", None)
    return list(names) if names is not None and hasattr(template, "input") else None


def _dynamic_options(inp) -> list | None:
    options = getattr(inp, "options", None)
    if isinstance(options, list) and options and hasattr(options[0], "key"):
        return options
    return None


def _schema_inputs(node_cls: type) -> list:
    return list(node_cls.define_schema().inputs or [])


def declared_inputs(node_cls: type) -> dict[str, Any]:
    """Every input name an API graph may use -> its schema input (None: a legacy name)."""
    declared: dict[str, Any] = {}
    for inp in _schema_inputs(node_cls):
        names, options = _autogrow_names(inp), _dynamic_options(inp)
        if names is not None:
            for name in names:
                declared[f"{inp.id}.{name}"] = inp.template.input
        else:
            declared[inp.id] = inp
        for option in options or []:
            for sub in option.inputs:
                declared[f"{inp.id}.{sub.id}"] = sub
    for name in getattr(node_cls, "LEGACY_INPUTS", ()):
        declared.setdefault(name, None)
    return declared


def flat_inputs(node_cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with nested dynamic values under their API names (``people.person_1``)."""
    dynamic = {
        inp.id
        for inp in _schema_inputs(node_cls)
        if _autogrow_names(inp) is not None or _dynamic_options(inp) is not None
    }
    flat: dict[str, Any] = {}
    for name, value in given.items():
        if name in dynamic and isinstance(value, dict):
            for key, inner in value.items():
                flat[name if key == name else f"{name}.{key}"] = inner
        else:
            flat[name] = value
    return flat


def _shown_inputs(node_cls: type) -> str:
    required, optional = [], []
    for inp in _schema_inputs(node_cls):
        names = _autogrow_names(inp)
        shown = f"{inp.id} ({names[0]} ... {names[-1]})" if names else inp.id
        (optional if getattr(inp, "optional", False) else required).append(shown)
    text = ", ".join(required)
    if optional:
        text += f" (optional: {', '.join(optional)})"
    return text


def _value_problem(name: str, inp: Any, value: Any) -> str | None:
    """ComfyUI's own list and range checks for one literal input (None: fine)."""
    if inp is None:
        return None
    dynamic = _dynamic_options(inp)
    choices = [o.key for o in dynamic] if dynamic else getattr(inp, "options", None)
    if isinstance(choices, list) and all(isinstance(c, str) for c in choices):
        if value not in choices:
            listed = (
                ", ".join(map(str, choices)) if len(choices) <= 20 else f"{len(choices)} entries"
            )
            return f"{name}: {value!r} is not one of the choices ({listed})"
        return None
    low, high = getattr(inp, "min", None), getattr(inp, "max", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and value < low:
            return f"{name}: value {value} is smaller than the minimum {low}"
        if high is not None and value > high:
            return f"{name}: value {value} is bigger than the maximum {high}"
    return None


def check_inputs(
    node_cls: type, display: str, given: dict[str, Any], own_validator: Callable | None = None
) -> bool | str:
    """True, or the first problem of ``given``: unknown names, values, the node's own check."""
    declared = declared_inputs(node_cls)
    flat = flat_inputs(node_cls, given)
    unknown = sorted(n for n in flat if n not in declared)
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        return (
            f"'{display}' has no input {names}: remove it from the graph; the inputs of "
            f"this node are {_shown_inputs(node_cls)}"
        )
    own_args: list[str] = []
    takes_all = False
    if own_validator is not None:
        spec = inspect.getfullargspec(own_validator)
        own_args = [a for a in spec.args if a != "cls"]
        takes_all = spec.varkw is not None  # (**given): every input, by its API name
    for name, value in flat.items():
        if name in own_args or value is None:  # None: a link, checked by type, not value
            continue
        problem = _value_problem(name, declared[name], value)
        if problem:
            return problem
    if own_validator is not None:
        try:
            chosen = flat if takes_all else {a: given.get(a) for a in own_args}
            result = own_validator(**chosen)
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


def _own(node_cls: type, name: str) -> Any:
    """The class attribute ``name`` as the node (or a base class of the pack, such as the
    loaders' common one) defines it; None where only ComfyUI's node base does."""
    from .v3 import io  # here, not above: this module loads on a host without comfy_api too

    for klass in node_cls.__mro__:
        if issubclass(io.ComfyNode, klass):  # ComfyUI's base classes: their defaults
            return None
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def guard(node_cls: type, display: str | None = None) -> type:
    """Give the V3 node ``node_cls`` the pack's input check and path-free errors (idempotent)."""
    if node_cls.__dict__.get(_GUARDED, False):
        return node_cls
    display = display or node_cls.define_schema().display_name
    own = _own(node_cls, "validate_inputs")
    own = own.__get__(None, node_cls) if own is not None else None

    def validate(cls, **given):
        return check_inputs(cls, display, given, own)

    node_cls.validate_inputs = classmethod(validate)
    function = _own(node_cls, "execute").__func__

    @functools.wraps(function)
    def run(cls, *args, **kwargs):
        try:
            return function(cls, *args, **kwargs)
        except Exception as exc:
            _redacted(exc)
            raise

    node_cls.execute = classmethod(run)
    setattr(node_cls, _GUARDED, True)
    return node_cls
