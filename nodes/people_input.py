"""The people input of Subject Encode and Identity Similarity: one to four reference photos.

Where the host has V3 ``Autogrow`` (ComfyUI 0.8.0+), the people are a growing list: a new
``person_N`` socket appears when the last one is connected; their API names are
``people.person_1`` ... ``people.person_4``. Elsewhere (0.3.48) they are the four sockets
``person_1`` ... ``person_4``. Graphs saved with the other naming keep working:
ComfyUI hands such links to the node, which takes ``person_N`` and ``people.person_N`` alike.
The i-th person binds the i-th ``<|image|>`` marker; errors name people as ``person_i``.
"""

from __future__ import annotations

from ..facediffuser_core.errors import InputError
from ..facediffuser_core.node_names import PEOPLE, PERSON, person_input
from ..facediffuser_core.subject.prompt import MAX_SUBJECTS
from .v3 import HAS_AUTOGROW, OPTIONAL_AUTOGROW, io

NAMES = tuple(person_input(i) for i in range(1, MAX_SUBJECTS + 1))
LIST = PEOPLE
# the other naming, accepted by the guard and handled by :func:`people_by_position`
LEGACY_INPUTS = NAMES if HAS_AUTOGROW else tuple(f"{LIST}.{n}" for n in NAMES)


def people_inputs(tooltip: str) -> list:
    """The schema inputs for the people (Autogrow list where the host has it)."""
    if HAS_AUTOGROW:
        # optional sockets where the host allows (0.12 would otherwise require
        # people.person_1 by that name and refuse graphs naming it person_1); at least one
        # person is checked at validation either way
        person = io.Image.Input(PERSON, optional=OPTIONAL_AUTOGROW, tooltip=tooltip)
        template = io.Autogrow.TemplateNames(person, names=list(NAMES), min=1)
        return [
            io.Autogrow.Input(
                LIST,
                template=template,
                tooltip="One to four people: connect person_1; the next socket appears when "
                "the last one is connected.",
            )
        ]
    # all optional (at least one person is checked at validation), so graphs naming them
    # people.person_N (exported from a newer frontend) also run here
    return [io.Image.Input(n, optional=True, tooltip=tooltip) for n in NAMES]


NONE_CONNECTED = (
    "no person is connected: connect a reference photo to person_1 (it binds the first "
    "<|image|> marker of the prompt)"
)


def people_problem(given: dict) -> str | None:
    """Why the inputs ``given`` at validation (API names) hold no person (None: they do)."""
    if any(k in NAMES or k.startswith(f"{LIST}.") for k in given):
        return None
    return NONE_CONNECTED


def people_by_position(given: dict) -> list:
    """``[person_1, ..., person_4]`` (None where not connected) from any accepted naming."""
    found: dict[str, object] = {}
    nested = given.get(LIST)
    items = list(nested.items()) if isinstance(nested, dict) else []
    items += [(k, v) for k, v in given.items() if k != LIST]
    for name, value in items:
        key = name.split(".", 1)[1] if name.startswith(f"{LIST}.") else name
        if key not in NAMES or value is None:
            continue
        if key in found:
            raise InputError(
                f"{key} is connected twice (as {key} and {LIST}.{key}): keep one of them"
            )
        found[key] = value
    if not found:
        raise InputError(NONE_CONNECTED)
    return [found.get(n) for n in NAMES]
