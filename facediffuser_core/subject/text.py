"""CLIP tokenizer and text-encoder helpers for the engine.

The engine tokenizes marked prompts itself (see ``subject.tokenize_prompt``) and encodes them
in 77-token chunks with a transformers ``CLIPTextModel``. This module loads the SD1.5 CLIP BPE
tokenizer from a folder (guarding against a silent transformers 5 failure mode), adapts it to
the callables ``subject`` expects, runs the chunked text encoder, and writes a tiny but valid
CLIP BPE tokenizer for tests and demos that must not download anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import CheckpointError, InputError, ModelError
from .prompt import TokenChunks

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
_WHERE = (
    "copy vocab.json and merges.txt from the tokenizer/ folder of "
    "runwayml/stable-diffusion-v1-5 (or the root of openai/clip-vit-large-patch14) on the "
    "Hugging Face hub into it"
)
_CHECK_TEXT = "a photo of a person"


def load_tokenizer(path: str | os.PathLike) -> CLIPTokenizer:
    """Load a CLIP BPE tokenizer from a folder holding vocab.json + merges.txt.

    Also accepts a file inside that folder or a diffusers model folder with a ``tokenizer/``
    sub-folder. ``model_max_length`` is forced to 77. Raises CheckpointError with the fix.
    """
    folder = Path(path).expanduser()
    if folder.is_file():
        folder = folder.parent
    if not (folder / "vocab.json").exists() and (folder / "tokenizer").is_dir():
        folder = folder / "tokenizer"
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder {folder} does not exist: create it and {_WHERE}")
    has_pair = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not has_pair and not (folder / "tokenizer.json").is_file():
        missing = [n for n in ("vocab.json", "merges.txt") if not (folder / n).is_file()]
        raise CheckpointError(f"tokenizer folder {folder} lacks {' and '.join(missing)}: {_WHERE}")
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_LENGTH)
    except Exception as exc:  # any parse failure of user files is a checkpoint problem
        raise CheckpointError(
            f"could not read the CLIP tokenizer in {folder} ({type(exc).__name__}: {exc}): "
            f"the files are damaged or not a CLIP tokenizer; {_WHERE}"
        ) from exc
    tokenizer.model_max_length = MAX_LENGTH
    _verify(tokenizer, folder)
    return tokenizer


def _verify(tokenizer, folder: Path) -> None:
    """Refuse tokenizers that load but do not work (e.g. an empty 2-token vocabulary)."""
    problem = None
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        problem = f"it has no {BOS_TOKEN} / {EOS_TOKEN} tokens"
    else:
        ids = encoder_for(tokenizer)(_CHECK_TEXT)
        decoded = tokenizer.decode(ids).strip()
        if not ids or tokenizer.unk_token_id in ids or decoded != _CHECK_TEXT:
            problem = (
                f"it does not round-trip {_CHECK_TEXT!r} (ids {ids[:12]}, decoded {decoded!r}; "
                f"vocabulary of {len(tokenizer)} entries)"
            )
    if problem:
        raise CheckpointError(f"the tokenizer in {folder} is unusable: {problem}; {_WHERE}")


def encoder_for(tokenizer) -> Callable[[str], list[int]]:
    """A callable mapping text to token ids without BOS/EOS (no length limit, no warning)."""

    def encode(text: str) -> list[int]:
        # Explicit padding/truncation: a fast tokenizer's backend keeps the padding state of
        # its last padded call otherwise.
        ids = tokenizer.encode(
            text, add_special_tokens=False, padding=False, truncation=False, verbose=False
        )
        return [int(i) for i in ids]

    return encode


def special_ids(tokenizer) -> tuple[int, int, int]:
    """``(bos, eos, pad)`` ids; pad falls back to EOS (SD1.5 pads with the end token)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise CheckpointError(
            f"the tokenizer has no {BOS_TOKEN} / {EOS_TOKEN} tokens, so it is not a CLIP "
            f"tokenizer: {_WHERE}"
        )
    pad = tokenizer.pad_token_id
    return int(bos), int(eos), int(eos if pad is None else pad)


def encode_chunks(text_encoder, chunks: TokenChunks | Sequence[Sequence[int]]) -> Tensor:
    """Encode 77-token chunks with a CLIPTextModel -> (1, 77 * k, D), chunks concatenated.

    Each chunk is encoded independently (its own positions and causal mask); the output is the
    last hidden state after the final layer norm, in the encoder's device and dtype.
    """
    rows = chunks.chunks if isinstance(chunks, TokenChunks) else chunks
    rows = [[int(t) for t in row] for row in rows]
    if not rows:
        raise InputError("no token chunks to encode: tokenize the prompt with chunk_tokens first")
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise InputError(
            f"token chunks have different lengths {sorted(lengths)}: build them with chunk_tokens"
        )
    config = getattr(text_encoder, "config", None)
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos is not None and len(rows[0]) > max_pos:
        raise InputError(
            f"token chunks are {len(rows[0])} long but the text encoder takes at most {max_pos} "
            "tokens: chunk with max_length equal to the encoder's length (77 for CLIP)"
        )
    vocab = getattr(config, "vocab_size", None)
    top = max(max(r) for r in rows)
    if vocab is not None and (top >= vocab or min(min(r) for r in rows) < 0):
        raise ModelError(
            f"token id {top} is outside the text encoder's vocabulary of {vocab}: the tokenizer "
            "and the text encoder do not belong together; use the tokenizer of the same model"
        )
    device = next(text_encoder.parameters()).device
    ids = torch.tensor(rows, dtype=torch.long, device=device)
    hidden = text_encoder(input_ids=ids).last_hidden_state  # (k, L, D)
    return hidden.reshape(1, -1, hidden.shape[-1])


# --------------------------------------------------------------------------- tiny tokenizer

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
