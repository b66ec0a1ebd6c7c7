"""Prompts with ``<|image|>`` markers: the marker, the 4-person limit, parsing (torch-free).

The SDM replaces the token of the word *before* each marker with a fusion of that token's
embedding and one person's image embedding. This module finds those words and checks the
marker count against the people given; :mod:`.text` turns a parsed prompt into tokens. It
imports no torch, so the queue client can validate prompts without it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from ..errors import PromptError

MARKER = "<|image|>"
MAX_SUBJECTS = 4

EXAMPLE = "e.g. 'a man <|image|> and a woman <|image|> at the beach'"
# Anything that looks like a marker but is not the one the SDM was trained with.
_MARKER_LIKE = re.compile(r"<\|[^<>|\s]{0,20}\|>")


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt split at its ``<|image|>`` markers."""

    segments: tuple[str, ...]  # text between markers; len == num_subjects + 1
    num_subjects: int
    clean_text: str  # markers removed, whitespace collapsed


def _is_word_char(ch: str) -> bool:
    # Letters, digits and combining marks: what CLIP's pre-tokenizer treats as word material.
    return unicodedata.category(ch)[0] in "LNM"


def shorten(text: str, limit: int = 60) -> str:
    """``text`` on one line, cut to ``limit`` characters, for error messages."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Split ``prompt`` at its ``<|image|>`` markers and check that each one follows a word.

    Zero markers is valid (``num_subjects == 0``); callers that need subjects check that.
    """
    if not isinstance(prompt, str):
        raise PromptError(
            f"the prompt must be text, got {type(prompt).__name__}: pass a string, {EXAMPLE}"
        )
    if not prompt.strip():
        raise PromptError(
            "the prompt is empty: describe the image and put <|image|> right after the word "
            f"naming each reference person, {EXAMPLE}"
        )
    segments = tuple(prompt.split(MARKER))
    num_subjects = len(segments) - 1

    for seg in segments:
        odd = _MARKER_LIKE.search(seg)
        if odd is not None:
            raise PromptError(
                f"the prompt contains {odd.group(0)!r}, which is not a marker Face-diffuser "
                f"knows: the only marker is {MARKER} (written exactly like that), {EXAMPLE}"
            )
    if num_subjects > MAX_SUBJECTS:
        raise PromptError(
            f"the prompt has {num_subjects} {MARKER} markers but Face-diffuser supports at most "
            f"{MAX_SUBJECTS} subjects (its training maximum): remove "
            f"{num_subjects - MAX_SUBJECTS} marker(s) and the matching reference image(s)"
        )
    for i in range(num_subjects):
        before = segments[i].rstrip()
        if not before or not _is_word_char(before[-1]):
            if i == 0 and not before:
                where = "at the start of the prompt"
            elif not before:
                where = f"directly after marker {i}"
            else:
                where = f"after {shorten(before[-20:])!r}"
            raise PromptError(
                f"marker {i + 1} ({MARKER}) is {where}, not right after a word: a marker binds "
                "the word just before it to a reference image, so put it directly after the "
                f"word naming that person, {EXAMPLE}"
            )
    clean_text = " ".join("".join(segments).split())
    return ParsedPrompt(segments=segments, num_subjects=num_subjects, clean_text=clean_text)


def require_subjects(parsed: ParsedPrompt, num_references: int) -> None:
    """PromptError unless the prompt has markers and exactly one reference per marker."""
    if parsed.num_subjects == 0:
        raise PromptError(
            f"the prompt has no {MARKER} marker: put one right after the word for each person, "
            f"e.g. 'a man {MARKER} riding a horse', one reference image per marker"
        )
    if parsed.num_subjects != num_references:
        raise PromptError(
            f"the prompt has {parsed.num_subjects} {MARKER} marker(s) but "
            f"{num_references} reference image(s) were given: give exactly one person per "
            "marker (one image, or several photos of that one person), in marker order "
            "(person 1 binds the first marker)"
        )
