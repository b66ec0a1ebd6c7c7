"""Tests for facediffuser_core.text: tokenizer loading, tiny tokenizer, chunked encoding."""

from __future__ import annotations

import json
import logging
import random
import shutil

import pytest
import torch

from facediffuser_core.errors import CheckpointError, InputError, ModelError
from facediffuser_core.subject.postfuse import PostfuseModule, subject_conditioning
from facediffuser_core.subject.text import (
    chunk_tokens,
    encode_chunks,
    encoder_for,
    load_tokenizer,
    special_ids,
    tokenize_prompt,
)
from facediffuser_core.tiny.tokenizer import _bytes_to_unicode, write_tiny_tokenizer


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tok"))


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


@pytest.fixture(scope="module")
def text_model(tok):
    from transformers import CLIPTextConfig, CLIPTextModel

    bos, eos, pad = special_ids(tok)
    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=16,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    model = CLIPTextModel(cfg).eval()
    # transformers 5 layout: flat keys, no "text_model." level
    assert "embeddings.token_embedding.weight" in model.state_dict()
    return model


# --------------------------------------------------------------------------- tiny tokenizer


def test_tiny_tokenizer_files_and_vocab(tok_dir):
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = (tok_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    alphabet = list(_bytes_to_unicode().values())
    assert len(set(alphabet)) == 256
    order = sorted(vocab, key=vocab.get)
    assert order[:256] == alphabet
    assert order[256:512] == [c + "</w>" for c in alphabet]
    assert order[-2:] == ["<|startoftext|>", "<|endoftext|>"]
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert 300 < len(vocab) < 1000
    for line in merges[1:]:
        a, b = line.split(" ")
        assert a in vocab and b in vocab and a + b in vocab
    # the printable ASCII bytes map to themselves (GPT-2 / CLIP table)
    assert _bytes_to_unicode()[ord("a")] == "a" and _bytes_to_unicode()[ord(" ")] == "Ġ"


def test_tiny_tokenizer_deterministic(tok_dir, tmp_path):
    again = write_tiny_tokenizer(tmp_path / "again")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (tok_dir / name).read_bytes()


def test_tiny_tokenizer_common_words_single_tokens(tok):
    enc = encoder_for(tok)
    for w in [
        "a",
        "man",
        "woman",
        "and",
        "the",
        "at",
        "beach",
        "photo",
        "of",
        "on",
        "in",
        "person",
        "standing",
        "riding",
        "horse",
        "street",
    ]:
        ids = enc(w)
        assert tok.convert_ids_to_tokens(ids) == [w + "</w>"], w


def test_tiny_tokenizer_never_unknown(tok):
    enc = encoder_for(tok)
    rng = random.Random(0)
    alphabet = "abcxyzABCXYZ0123456789 ,.!?'\"()[]{}<>|@#%&*-_=+;:/\\éüßñ日本語😀\t\n"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(200)]
    texts.append("".join(chr(c) for c in range(32, 0x250)))
    for text in texts:
        ids = enc(text)
        assert tok.unk_token_id not in ids and tok.bos_token_id not in ids, text
        if text.strip():
            assert ids


def test_tiny_tokenizer_roundtrip(tok):
    enc = encoder_for(tok)
    rng = random.Random(1)
    for _ in range(100):
        words = [
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))
            for _ in range(rng.randint(1, 8))
        ]
        text = " ".join(words)
        assert tok.decode(enc(text)) == text
    assert tok.decode(enc("a photo of a man and a woman at the beach")) == (
        "a photo of a man and a woman at the beach"
    )


def test_tiny_tokenizer_call_adds_bos_eos(tok):
    bos, eos, _ = special_ids(tok)
    ids = tok("a man").input_ids
    assert ids[0] == bos and ids[-1] == eos and ids[1:-1] == encoder_for(tok)("a man")


# --------------------------------------------------------------------------- load_tokenizer


def test_load_tokenizer_max_length_and_special_ids(tok, tok_dir, tmp_path):
    assert tok.model_max_length == 77
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    assert special_ids(tok) == (
        vocab["<|startoftext|>"],
        vocab["<|endoftext|>"],
        vocab["<|endoftext|>"],
    )
    # model_max_length is forced even if the config says otherwise
    d = tmp_path / "t"
    shutil.copytree(tok_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = 1000000
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert load_tokenizer(d).model_max_length == 77


def test_load_tokenizer_accepts_file_and_model_root(tok_dir, tmp_path):
    assert len(load_tokenizer(tok_dir / "vocab.json")) == len(load_tokenizer(tok_dir))
    shutil.copytree(tok_dir, tmp_path / "sd15" / "tokenizer")
    assert load_tokenizer(tmp_path / "sd15").model_max_length == 77


def test_load_tokenizer_without_config(tok_dir, tmp_path):
    d = tmp_path / "bare"
    d.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tok_dir / name, d / name)
    t = load_tokenizer(d)
    assert t.model_max_length == 77 and special_ids(t) == special_ids(load_tokenizer(tok_dir))


def test_load_tokenizer_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_tokenizer(tmp_path / "nope")
    msg = str(info.value)
    assert str(tmp_path / "nope") in msg and "runwayml/stable-diffusion-v1-5" in msg


def test_load_tokenizer_missing_files(tok_dir, tmp_path):
    d = tmp_path / "half"
    d.mkdir()
    shutil.copy(tok_dir / "vocab.json", d / "vocab.json")
    with pytest.raises(CheckpointError, match="lacks merges.txt") as info:
        load_tokenizer(d)
    assert "openai/clip-vit-large-patch14" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="vocab.json and merges.txt"):
        load_tokenizer(empty)


def test_load_tokenizer_broken_vocab(tmp_path):
    # Loads without error in transformers but cannot tokenize anything: must be refused.
    d = tmp_path / "broken"
    d.mkdir()
    (d / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(CheckpointError, match="unusable"):
        load_tokenizer(d)


def test_load_tokenizer_garbage_files(tmp_path):
    d = tmp_path / "garbage"
    d.mkdir()
    (d / "vocab.json").write_text("this is not json")
    (d / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(CheckpointError, match="garbage"):
        load_tokenizer(d)


# --------------------------------------------------------------------------- encoder_for


def test_encoder_for_long_text_not_truncated(tok, caplog):
    enc = encoder_for(tok)
    with caplog.at_level(logging.WARNING):
        ids = enc("a man " * 100)
    assert len(ids) == 200
    assert not [r for r in caplog.records if "sequence length" in r.getMessage()]


class _SlowTokenizer:
    """Stand-in for a Python tokenizer without ``backend_tokenizer``."""

    bos_token_id, eos_token_id, pad_token_id = 5, 6, None

    def encode(self, text, add_special_tokens=True, padding=False, truncation=None, verbose=True):
        assert add_special_tokens is False and verbose is False and padding is False
        return [len(w) for w in text.split()]


def test_encoder_for_ignores_padding_of_earlier_calls(tok):
    enc = encoder_for(tok)
    before = enc("a man")
    tok(["a man", "a photo of a woman"], padding="max_length", max_length=77)
    assert enc("a man") == before == tok.convert_tokens_to_ids(["a</w>", "man</w>"])


def test_encoder_for_python_tokenizer_and_pad_fallback():
    assert encoder_for(_SlowTokenizer())("ab cde") == [2, 3]
    assert special_ids(_SlowTokenizer()) == (5, 6, 6)


def test_special_ids_missing():
    t = _SlowTokenizer()
    t.bos_token_id = None
    with pytest.raises(CheckpointError, match="not a CLIP tokenizer"):
        special_ids(t)


# --------------------------------------------------------------------------- encode_chunks


def test_encode_chunks_equals_per_chunk_runs(tok, text_model):
    enc = encoder_for(tok)
    bos, eos, pad = special_ids(tok)
    t = tokenize_prompt("a photo of " * 30 + "a man <|image|> riding a horse", enc)
    chunks = chunk_tokens(t, bos_id=bos, eos_id=eos, pad_id=pad)
    assert len(chunks.chunks) == 2
    with torch.no_grad():
        out = encode_chunks(text_model, chunks)
        want = torch.cat(
            [text_model(input_ids=torch.tensor([c])).last_hidden_state for c in chunks.chunks],
            dim=1,
        )
        out_list = encode_chunks(text_model, [list(c) for c in chunks.chunks])
    assert out.shape == (1, 154, 16)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(out_list, out)
    # the final layer norm is applied (each token normalised with its affine params)
    ln = (
        text_model.text_model.final_layer_norm
        if hasattr(text_model, "text_model")
        else (text_model.final_layer_norm)
    )
    assert ln.weight.shape == (16,)


def test_encode_chunks_single_chunk_is_plain_sd_conditioning(tok, text_model):
    bos, eos, pad = special_ids(tok)
    ids = tok("a man", padding="max_length", max_length=77).input_ids
    chunks = chunk_tokens(encoder_for(tok)("a man"), bos_id=bos, eos_id=eos, pad_id=pad)
    assert list(chunks.chunks[0]) == ids
    with torch.no_grad():
        torch.testing.assert_close(
            encode_chunks(text_model, chunks),
            text_model(input_ids=torch.tensor([ids])).last_hidden_state,
        )


def test_encode_chunks_dtype(tok, text_model):
    import copy

    m64 = copy.deepcopy(text_model).double()
    bos, eos, pad = special_ids(tok)
    chunks = chunk_tokens([], bos_id=bos, eos_id=eos, pad_id=pad)
    with torch.no_grad():
        assert encode_chunks(m64, chunks).dtype == torch.float64


def test_encode_chunks_errors(tok, text_model):
    with pytest.raises(InputError, match="no token chunks"):
        encode_chunks(text_model, [])
    with pytest.raises(InputError, match="different lengths"):
        encode_chunks(text_model, [[1] * 77, [1] * 76])
    with pytest.raises(InputError, match="at most 77"):
        encode_chunks(text_model, [[1] * 78])
    with pytest.raises(ModelError, match="vocabulary"):
        encode_chunks(text_model, [[len(tok) + 5] * 77])


def test_end_to_end_subject_conditioning(tok, text_model):
    enc = encoder_for(tok)
    bos, eos, pad = special_ids(tok)
    t = tokenize_prompt("a man <|image|> and a woman <|image|> at the beach", enc)
    chunks = chunk_tokens(t, bos_id=bos, eos_id=eos, pad_id=pad)
    assert chunks.positions == (2, 5)
    torch.manual_seed(1)
    pf = PostfuseModule(16)
    with torch.no_grad():
        hidden = encode_chunks(text_model, chunks)
        out = subject_conditioning(hidden, chunks.positions, torch.randn(2, 16), pf)
    changed = (out != hidden).any(-1)[0].nonzero().flatten().tolist()
    assert changed == [2, 5]
