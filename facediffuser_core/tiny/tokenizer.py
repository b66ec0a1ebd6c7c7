"""A tiny CLIP BPE tokenizer in the real file format (vocab.json, merges.txt): the full
byte alphabet plus merges for the words tests and demos use, so prompts tokenize to few
tokens and the tiny text encoder stays small."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..subject.text import BOS_TOKEN, EOS_TOKEN, MAX_LENGTH

# Words that tests and demos use; each becomes a single token where the merges allow.
_TINY_WORDS = tuple(
    """
    a an the photo picture portrait painting of man woman person girl boy and at on
    in with by beach street city park forest standing sitting riding walking holding
    wearing smiling horse bike hat glasses red blue green dress shirt style close up
    face two people super image night snow
    """.split()
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode character table (256 entries)."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in keep + [b for b in range(256) if b not in keep]}


def _bpe(word: tuple[str, ...], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Plain BPE: repeatedly merge the lowest-ranked adjacent pair."""
    parts = list(word)
    while len(parts) > 1:
        adjacent = zip(parts, parts[1:], strict=False)
        pairs = [(ranks.get(pair), i) for i, pair in enumerate(adjacent)]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def _tiny_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in _TINY_WORDS:
        symbols = (*word[:-1], word[-1] + "</w>")
        parts = _bpe(symbols, ranks)
        while len(parts) > 1:
            # New merges get the highest rank, so earlier words (already one token) are unaffected.
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            if pair[0] + pair[1] not in tokens:
                tokens.append(pair[0] + pair[1])
            parts = _bpe(symbols, ranks)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_tiny_tokenizer(folder: str | os.PathLike) -> Path:
    """Write a small, valid CLIP BPE tokenizer (full byte alphabet + a few word merges)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _tiny_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
