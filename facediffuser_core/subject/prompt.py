"""Prompts with ``<|image|>`` markers: parsing, tokenizing, 77-token chunks (torch-free).

The SDM replaces the token of the word *before* each marker with a fusion of that token's
embedding and one person's image embedding. This module finds those words, checks the
marker count against the people given, and maps them to token positions, also for
ComfyUI-style long prompts split in 77-token chunks. It imports no torch, so the queue
client can validate prompts without it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import InputError, PromptError

MARKER = "<|image|>"
MAX_SUBJECTS = 4

_EXAMPLE = "e.g. 'a man <|image|> and a woman <|image|> at the beach'"
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


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Split ``prompt`` at its ``<|image|>`` markers and check that each one follows a word.

    Zero markers is valid (``num_subjects == 0``); callers that need subjects check that.
    """
    if not isinstance(prompt, str):
        raise PromptError(
            f"the prompt must be text, got {type(prompt).__name__}: pass a string, {_EXAMPLE}"
        )
    if not prompt.strip():
        raise PromptError(
            "the prompt is empty: describe the image and put <|image|> right after the word "
            f"naming each reference person, {_EXAMPLE}"
        )
    segments = tuple(prompt.split(MARKER))
    num_subjects = len(segments) - 1

    for seg in segments:
        odd = _MARKER_LIKE.search(seg)
        if odd is not None:
            raise PromptError(
                f"the prompt contains {odd.group(0)!r}, which is not a marker Face-diffuser "
                f"knows: the only marker is {MARKER} (written exactly like that), {_EXAMPLE}"
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
                where = f"after {_short(before[-20:])!r}"
            raise PromptError(
                f"marker {i + 1} ({MARKER}) is {where}, not right after a word: a marker binds "
                "the word just before it to a reference image, so put it directly after the "
                f"word naming that person, {_EXAMPLE}"
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


@dataclass(frozen=True)
class SubjectTokens:
    """Content token ids of a marked prompt and the bound token of each subject."""

    ids: tuple[int, ...]  # no BOS/EOS, markers removed
    positions: tuple[int, ...]  # per subject, in marker order: index into ``ids``


def tokenize_prompt(
    prompt: str | ParsedPrompt, encode: Callable[[str], Sequence[int]]
) -> SubjectTokens:
    """Tokenize a marked prompt the way the reference's special-token tokenizer does.

    ``encode(text)`` must return ids without BOS/EOS. Each piece of text between markers is
    tokenized on its own and the pieces are concatenated; the token bound to marker ``i`` is the
    last token of the piece before it. A prompt already parsed is not parsed again.
    """
    parsed = prompt if isinstance(prompt, ParsedPrompt) else parse_prompt(prompt)
    ids: list[int] = []
    positions: list[int] = []
    for i, seg in enumerate(parsed.segments):
        seg_ids = [int(t) for t in encode(seg)] if seg.strip() else []
        ids.extend(seg_ids)
        if i < parsed.num_subjects:
            if not seg_ids:
                raise PromptError(
                    f"the text before marker {i + 1} ({_short(seg)!r}) gives no tokens, so "
                    f"there is no word to bind the reference image to: put {MARKER} right "
                    f"after the word naming the person, {_EXAMPLE}"
                )
            positions.append(len(ids) - 1)
    return SubjectTokens(ids=tuple(ids), positions=tuple(positions))


@dataclass(frozen=True)
class TokenChunks:
    """Token ids split in fixed-length CLIP chunks, with the flat bound positions."""

    chunks: tuple[tuple[int, ...], ...]  # each max_length long: BOS + content + EOS + pad
    positions: tuple[int, ...]  # flat indices into the concatenation of the chunks


def chunk_tokens(
    tokens: SubjectTokens | Sequence[int],
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_length: int = 77,
) -> TokenChunks:
    """Split content ids in ``max_length - 2``-token chunks, each wrapped in BOS/EOS and padded.

    Position ``p`` lands in chunk ``p // (max_length - 2)`` at flat index
    ``chunk * max_length + 1 + p % (max_length - 2)``. Empty content gives one chunk.
    """
    if isinstance(tokens, SubjectTokens):
        ids, positions = tokens.ids, tokens.positions
    else:
        ids, positions = tuple(int(t) for t in tokens), ()
    if max_length < 3:
        raise InputError(
            f"max_length={max_length} leaves no room for content between BOS and EOS: "
            "use the text encoder's length (77 for CLIP)"
        )
    per_chunk = max_length - 2
    pieces = [ids[i : i + per_chunk] for i in range(0, len(ids), per_chunk)] or [()]
    chunks = tuple(
        (bos_id, *piece, eos_id) + (pad_id,) * (per_chunk - len(piece)) for piece in pieces
    )
    flat = []
    for p in positions:
        if not 0 <= p < len(ids):
            raise InputError(
                f"bound position {p} is outside the {len(ids)} content tokens: build the "
                "positions with tokenize_prompt from the same prompt"
            )
        flat.append((p // per_chunk) * max_length + 1 + p % per_chunk)
    return TokenChunks(chunks=chunks, positions=tuple(flat))
