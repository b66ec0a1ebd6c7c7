"""CLIP tokenizer and text-encoder helpers for the engine.

The engine tokenizes marked prompts itself (see ``subject.tokenize_prompt``) and encodes them
in 77-token chunks with a transformers ``CLIPTextModel``. This module loads the SD1.5 CLIP BPE
tokenizer from a folder (guarding against a silent transformers 5 failure mode), adapts it to
the callables ``subject`` expects, runs the chunked text encoder, and writes a tiny but valid
CLIP BPE tokenizer for tests and demos that must not download anything.
"""

from __future__ import annotations

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
