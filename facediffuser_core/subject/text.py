"""From a parsed prompt to CLIP hidden states: tokens, 77-token chunks, the text encoder.

The engine tokenizes marked prompts itself (:func:`tokenize_prompt`: each marker's word
keeps a known token position) and encodes them in 77-token chunks (:func:`chunk_tokens`,
ComfyUI's layout for long prompts) with a transformers ``CLIPTextModel``
(:func:`encode_chunks`). It also loads the SD1.5 CLIP BPE tokenizer from a folder (guarding
against a silent transformers 5 failure mode) and adapts it to plain callables, so a host
can pass its own tokenizer (:func:`encoder_for`, :func:`special_ids`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import CheckpointError, InputError, ModelError, PromptError
from .prompt import EXAMPLE, MARKER, ParsedPrompt, parse_prompt, shorten

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


# --------------------------------------------------------------------------- tokens


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
                    f"the text before marker {i + 1} ({shorten(seg)!r}) gives no tokens, so "
                    f"there is no word to bind the reference image to: put {MARKER} right "
                    f"after the word naming the person, {EXAMPLE}"
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
    max_length: int = MAX_LENGTH,
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


# --------------------------------------------------------------------------- tokenizer


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
