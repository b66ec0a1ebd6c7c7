"""Tests for facediffuser_core.subject: markers, chunking, reference images, post-fusion."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facediffuser_core.errors import InputError, ModelError, PromptError
from facediffuser_core.subject.postfuse import (
    MLP,
    PostfuseModule,
    SubjectEncoder,
    subject_conditioning,
)
from facediffuser_core.subject.prompt import (
    MARKER,
    MAX_SUBJECTS,
    ParsedPrompt,
    parse_prompt,
)
from facediffuser_core.subject.reference import (
    CLIP_MEAN,
    CLIP_STD,
    preprocess_reference,
    preprocess_references,
)
from facediffuser_core.subject.text import (
    SubjectTokens,
    TokenChunks,
    chunk_tokens,
    encoder_for,
    load_tokenizer,
    special_ids,
    tokenize_prompt,
)
from facediffuser_core.tiny.tokenizer import write_tiny_tokenizer

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)
BOS, EOS, PAD = 1, 2, 0

# --------------------------------------------------------------------------- fake encoders

_WORDS: dict[str, int] = {}


def word_encode(text: str) -> list[int]:
    """One id per whitespace word (ids assigned on first sight, starting at 100)."""
    return [_WORDS.setdefault(w, 100 + len(_WORDS)) for w in text.split()]


def char_encode(text: str) -> list[int]:
    """One id per non-space character: its code point."""
    return [ord(c) for c in text if not c.isspace()]


def wid(word: str) -> int:
    return word_encode(word)[0]


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    return load_tokenizer(write_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


# --------------------------------------------------------------------------- parse_prompt


def test_parse_two_subjects():
    p = parse_prompt("a man <|image|> and a woman <|image|> at the beach")
    assert p == ParsedPrompt(
        segments=("a man ", " and a woman ", " at the beach"),
        num_subjects=2,
        clean_text="a man and a woman at the beach",
    )


def test_parse_zero_markers_allowed():
    p = parse_prompt("  a photo of\na man  ")
    assert p.num_subjects == 0 and p.segments == ("  a photo of\na man  ",)
    assert p.clean_text == "a photo of a man"


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_parse_one_to_four_subjects(n):
    prompt = " and ".join(f"person{i} {MARKER}" for i in range(n))
    p = parse_prompt(prompt)
    assert p.num_subjects == n and len(p.segments) == n + 1
    assert MARKER not in p.clean_text


def test_parse_more_than_four_refused():
    prompt = " ".join(f"man {MARKER}" for _ in range(MAX_SUBJECTS + 1))
    with pytest.raises(PromptError, match="at most 4"):
        parse_prompt(prompt)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_parse_empty_refused(prompt):
    with pytest.raises(PromptError, match="empty"):
        parse_prompt(prompt)


@pytest.mark.parametrize(
    "prompt, where",
    [
        ("<|image|> a man", "start"),
        ("  <|image|> a man", "start"),
        ("a man <|image|><|image|>", "after marker 1"),
        ("a man <|image|>   <|image|> walking", "after marker 1"),
        ("a man <|image|> , <|image|>", "not right after a word"),
        ("a man, <|image|>", "not right after a word"),
        (MARKER, "start"),
    ],
)
def test_parse_marker_without_word_refused(prompt, where):
    with pytest.raises(PromptError, match=where) as info:
        parse_prompt(prompt)
    assert "directly after the word" in str(info.value)


def test_parse_unknown_marker_refused():
    with pytest.raises(PromptError, match=r"<\|img\|>"):
        parse_prompt("a man <|img|> at the beach")


def test_parse_glued_markers():
    p = parse_prompt("a man<|image|>, walking")
    assert p.segments == ("a man", ", walking") and p.clean_text == "a man, walking"
    p = parse_prompt("super<|image|>man")
    assert p.segments == ("super", "man") and p.clean_text == "superman"


def test_parse_non_string_refused():
    with pytest.raises(PromptError, match="text"):
        parse_prompt(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- tokenize_prompt


def test_tokenize_word_encoder():
    t = tokenize_prompt("a man <|image|> and a woman <|image|> at the beach", word_encode)
    expected = [wid(w) for w in "a man and a woman at the beach".split()]
    assert t == SubjectTokens(ids=tuple(expected), positions=(1, 4))


def test_tokenize_char_encoder_positions():
    # chars: a m a n | a n d  -> the 'n' of "man" (index 3) is bound
    t = tokenize_prompt("a man <|image|> and", char_encode)
    assert t.ids == tuple(ord(c) for c in "amanand")
    assert t.positions == (3,)


def test_tokenize_marker_inside_word_char():
    t = tokenize_prompt("super<|image|>man", char_encode)
    assert t.ids == tuple(ord(c) for c in "superman") and t.positions == (4,)


def test_tokenize_punctuation_after_marker():
    t = tokenize_prompt("a man<|image|>, walking", word_encode)
    assert t.ids == (wid("a"), wid("man"), wid(","), wid("walking"))
    assert t.positions == (1,)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_tokenize_n_subjects(n):
    names = ["man", "woman", "girl", "boy"][:n]
    prompt = " with ".join(f"a {w} {MARKER}" for w in names) + " in the park"
    t = tokenize_prompt(prompt, word_encode)
    assert [t.ids[p] for p in t.positions] == [wid(w) for w in names]
    assert t.positions == tuple(1 + 3 * i for i in range(n))


def test_tokenize_no_markers():
    t = tokenize_prompt("a photo of a man", word_encode)
    assert t.positions == () and len(t.ids) == 5


def test_tokenize_segment_without_tokens_refused():
    with pytest.raises(PromptError, match="no tokens"):
        tokenize_prompt("a man <|image|>", lambda text: [])


def test_tokenize_propagates_parse_errors():
    with pytest.raises(PromptError):
        tokenize_prompt("<|image|> man", word_encode)
    with pytest.raises(PromptError, match="at most"):
        tokenize_prompt(" ".join(["man <|image|>"] * 5), word_encode)


def test_tokenize_converts_ids_to_int():
    t = tokenize_prompt("a man <|image|>", lambda s: np.array(word_encode(s), dtype=np.int64))
    assert all(type(i) is int for i in t.ids)


def test_tokenize_tiny_tokenizer_glued(tiny_tok):
    enc = encoder_for(tiny_tok)
    t = tokenize_prompt("a man<|image|>, walking", enc)
    tokens = tiny_tok.convert_ids_to_tokens(list(t.ids))
    assert tokens == ["a</w>", "man</w>", ",</w>", "walking</w>"]
    assert t.positions == (1,)


def test_tokenize_tiny_tokenizer_marker_inside_word(tiny_tok):
    enc = encoder_for(tiny_tok)
    t = tokenize_prompt("super<|image|>man", enc)
    # Segment-wise: "super" and "man" are tokenized apart (as the reference's special-token
    # tokenizer does), unlike the joined word "superman".
    assert t.ids == tuple(enc("super") + enc("man"))
    assert tuple(enc("superman")) != t.ids
    assert tiny_tok.convert_ids_to_tokens([t.ids[t.positions[0]]]) == ["super</w>"]


def test_tokenize_bound_token_is_last_piece_of_word(tiny_tok):
    # "walkingx" is not a known word: several BPE pieces; the last one is bound.
    enc = encoder_for(tiny_tok)
    t = tokenize_prompt("a walkingx <|image|> at night", enc)
    pieces = enc("a walkingx ")
    assert len(pieces) > 2 and t.positions == (len(pieces) - 1,)
    assert tiny_tok.convert_ids_to_tokens([t.ids[t.positions[0]]])[0].endswith("</w>")


def test_tokenize_property_random_prompts(tiny_tok):
    enc = encoder_for(tiny_tok)
    rng = random.Random(0)
    vocab = ["a", "man", "woman", "photo", "of", "the", "beach", "riding", "horse", "zq", "ok!"]
    for _ in range(30):
        n = rng.randint(0, 4)
        words, bound = [], []
        for _ in range(n):
            words += [rng.choice(vocab) for _ in range(rng.randint(0, 3))]
            w = rng.choice(["man", "woman", "girl", "xyzzy", "boy"])
            words += [w, MARKER]
            bound.append(w)
        words += [rng.choice(vocab) for _ in range(rng.randint(1, 3))]
        prompt = " ".join(words)
        t = tokenize_prompt(prompt, enc)
        assert list(t.ids) == enc(" ".join(w for w in words if w != MARKER))
        assert len(t.positions) == n
        for p, w in zip(t.positions, bound, strict=True):
            assert t.ids[p] == enc(w)[-1]


# --------------------------------------------------------------------------- chunk_tokens


def test_chunk_empty_content():
    c = chunk_tokens((), bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert c == TokenChunks(chunks=((BOS, EOS) + (PAD,) * 75,), positions=())
    assert len(c.chunks[0]) == 77


def test_chunk_short():
    c = chunk_tokens(SubjectTokens((5, 6, 7), (1,)), bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert c.chunks == ((BOS, 5, 6, 7, EOS) + (PAD,) * 72,)
    assert c.positions == (2,)


def test_chunk_exactly_75_and_76():
    ids = tuple(range(10, 85))
    c = chunk_tokens(ids, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert c.chunks == ((BOS, *ids, EOS),)
    c = chunk_tokens(ids + (99,), bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert c.chunks == ((BOS, *ids, EOS), (BOS, 99, EOS) + (PAD,) * 74)


def test_chunk_long_positions():
    ids = tuple(range(1000, 1160))  # 160 tokens -> 3 chunks
    pos = (0, 74, 75, 150, 159)
    c = chunk_tokens(SubjectTokens(ids, pos), bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert len(c.chunks) == 3 and all(len(ch) == 77 for ch in c.chunks)
    assert c.positions == (1, 75, 78, 155, 164)
    flat = [t for ch in c.chunks for t in ch]
    assert [flat[f] for f in c.positions] == [ids[p] for p in pos]
    for ch in c.chunks:
        assert ch[0] == BOS
    assert c.chunks[2] == (BOS, *ids[150:], EOS) + (PAD,) * 65
    # content is preserved in order
    assert [t for ch in c.chunks for t in ch[1:-1] if t >= 1000] == list(ids)


def test_chunk_custom_length():
    c = chunk_tokens(
        SubjectTokens((5, 6, 7, 8, 9), (4,)), bos_id=BOS, eos_id=EOS, pad_id=PAD, max_length=5
    )
    assert c.chunks == ((BOS, 5, 6, 7, EOS), (BOS, 8, 9, EOS, PAD))
    assert c.positions == (5 + 1 + 1,)


def test_chunk_errors():
    with pytest.raises(InputError, match="max_length"):
        chunk_tokens((1,), bos_id=BOS, eos_id=EOS, pad_id=PAD, max_length=2)
    with pytest.raises(InputError, match="outside"):
        chunk_tokens(SubjectTokens((5,), (1,)), bos_id=BOS, eos_id=EOS, pad_id=PAD)


def test_chunk_tiny_tokenizer_second_chunk(tiny_tok):
    enc = encoder_for(tiny_tok)
    bos, eos, pad = special_ids(tiny_tok)
    prompt = "a photo of " * 30 + "a man <|image|> riding a horse"
    t = tokenize_prompt(prompt, enc)
    (p,) = t.positions
    assert p == 91 and len(t.ids) > 75
    c = chunk_tokens(t, bos_id=bos, eos_id=eos, pad_id=pad)
    assert len(c.chunks) == 2 and all(len(ch) == 77 for ch in c.chunks)
    assert c.positions == (1 * 77 + 1 + p % 75,)
    flat = [x for ch in c.chunks for x in ch]
    assert tiny_tok.convert_ids_to_tokens([flat[c.positions[0]]]) == ["man</w>"]
    second = c.chunks[1]
    n = len(t.ids) - 75
    assert second[0] == bos and second[n + 1] == eos and set(second[n + 2 :]) == {pad}


# --------------------------------------------------------------------------- preprocessing


def expected_const(v: float) -> torch.Tensor:
    return ((torch.full((3, 1, 1), v) - MEAN) / STD).view(3)


def test_preprocess_shape_dtype():
    torch.manual_seed(0)
    out = preprocess_reference(torch.rand(100, 60, 3))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    assert preprocess_reference(torch.rand(50, 50, 3), size=32).shape == (3, 32, 32)


GREY = 100 / 255  # an 8-bit value: stays exact through the 8-bit rounding


def test_preprocess_uniform_grey():
    out = preprocess_reference(torch.full((64, 64, 3), GREY))
    torch.testing.assert_close(out, expected_const(GREY).view(3, 1, 1).expand(3, 224, 224))


def test_preprocess_tall_image_padded_symmetrically():
    out = preprocess_reference(torch.full((200, 100, 3), GREY))
    # 50 black columns each side of 200 -> 1/4 of the width: 56 of 224 columns per band.
    black = expected_const(0.0).view(3, 1, 1)
    grey = expected_const(GREY).view(3, 1, 1)
    torch.testing.assert_close(out[:, :, :50], black.expand(3, 224, 50))
    torch.testing.assert_close(out[:, :, -50:], black.expand(3, 224, 50))
    torch.testing.assert_close(out[:, :, 62:162], grey.expand(3, 224, 100))
    torch.testing.assert_close(out, out.flip(-1), atol=1e-4, rtol=0)


def test_preprocess_wide_image_padded_top_bottom():
    out = preprocess_reference(torch.full((100, 200, 3), 1.0))
    black = expected_const(0.0).view(3, 1, 1)
    torch.testing.assert_close(out[:, :50, :], black.expand(3, 50, 224))
    torch.testing.assert_close(out[:, -50:, :], black.expand(3, 50, 224))
    white = expected_const(1.0).view(3, 1, 1)
    torch.testing.assert_close(out[:, 62:162, :], white.expand(3, 100, 224))


def test_preprocess_identity_sizes_exact():
    # With object_resolution == size == image side, both resizes are identities and only
    # the 8-bit rounding remains.
    torch.manual_seed(1)
    img = torch.rand(224, 224, 3)
    out = preprocess_reference(img, object_resolution=224)
    eight_bit = torch.round(img.permute(2, 0, 1) * 255) / 255
    torch.testing.assert_close(out, (eight_bit - MEAN) / STD)


def test_preprocess_odd_padding_as_the_reference_pads():
    # FastComposer's PadToSquare pads (long - short) // 2 on both sides: 221 wide -> 223,
    # and the resize to the square object resolution absorbs the missing column.
    g = torch.Generator().manual_seed(2)
    img8 = torch.randint(0, 256, (224, 221, 3), dtype=torch.uint8, generator=g)
    out = preprocess_reference(img8, object_resolution=224)
    x = img8.permute(2, 0, 1).double()
    x = torch.nn.functional.pad(x, (1, 1, 0, 0))[None]
    x = torch.nn.functional.interpolate(
        x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True
    )
    expected = (torch.round(x)[0].float() / 255 - MEAN) / STD
    assert (out - expected).abs().gt(1e-5).float().mean() < 0.01  # round-half cases aside


def test_preprocess_rounds_to_8_bits_after_the_object_resize():
    # The reference resizes the uint8 image to object_resolution and keeps uint8 (its
    # training data went through the same path): every value the 224 resize sees is k/255.
    # With size == object_resolution that grid is visible in the output.
    g = torch.Generator().manual_seed(7)
    img8 = torch.randint(0, 256, (50, 70, 3), dtype=torch.uint8, generator=g)
    out = preprocess_reference(img8, object_resolution=64, size=64)
    levels = (out * STD + MEAN) * 255
    torch.testing.assert_close(levels, torch.round(levels), atol=2e-4, rtol=0)
    # ... and it is the rounding of the float resize, not a truncation or a float path
    x = torch.nn.functional.pad(img8.permute(2, 0, 1).float(), (0, 0, 10, 10))[None]
    x = torch.nn.functional.interpolate(
        x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True
    )
    assert not torch.allclose(x, torch.round(x))  # the resize does make fractional values
    torch.testing.assert_close(levels, torch.round(x)[0], atol=2e-4, rtol=0)


def test_preprocess_uint8_matches_float():
    g = torch.Generator().manual_seed(3)
    img8 = torch.randint(0, 256, (90, 70, 3), dtype=torch.uint8, generator=g)
    a = preprocess_reference(img8)
    b = preprocess_reference(img8.float() / 255)
    assert torch.equal(a, b)  # float images are taken at 8 bits first
    c = preprocess_reference(img8.numpy())
    torch.testing.assert_close(a, c)


def test_preprocess_channel_variants():
    torch.manual_seed(4)
    grey = torch.rand(40, 30)
    rgb = grey[..., None].expand(40, 30, 3)
    ref = preprocess_reference(rgb)
    torch.testing.assert_close(preprocess_reference(grey), ref)
    torch.testing.assert_close(preprocess_reference(grey[..., None]), ref)
    rgba = torch.cat([rgb, torch.rand(40, 30, 1)], dim=-1)
    torch.testing.assert_close(preprocess_reference(rgba), ref)
    torch.testing.assert_close(preprocess_reference(rgb[None]), ref)
    torch.testing.assert_close(preprocess_reference(rgb.double()), ref)


def test_preprocess_linear_ramp_stays_monotone():
    ramp = torch.linspace(0, 1, 300).view(1, 300, 1).expand(300, 300, 3)
    x = preprocess_reference(ramp)[0]
    assert torch.all(x[:, 1:] >= x[:, :-1] - 1e-6)
    torch.testing.assert_close(x, x[:1].expand_as(x))  # constant along columns


@pytest.mark.parametrize(
    "image, match",
    [
        (torch.rand(3, 64, 64), "permute"),
        (torch.rand(2, 64, 64, 3), "batch of 2"),
        (torch.rand(64, 64, 2), "expected"),
        (torch.rand(64), "expected"),
        (torch.zeros(0, 64, 3), "no pixels"),
        (torch.randint(0, 255, (8, 8, 3), dtype=torch.int32), "dtype"),
        (torch.rand(8, 8, 3) * 255, "divide"),
        (torch.rand(8, 8, 3) * 2 - 1, r"\(x \+ 1\) / 2"),
        (torch.full((8, 8, 3), float("nan")), "NaN"),
        ([[0.5]], "torch tensor"),
    ],
)
def test_preprocess_bad_inputs(image, match):
    with pytest.raises(InputError, match=match):
        preprocess_reference(image)


def test_preprocess_bad_sizes():
    with pytest.raises(InputError, match="object_resolution"):
        preprocess_reference(torch.rand(8, 8, 3), object_resolution=0)


def test_preprocess_references_stack_and_errors():
    torch.manual_seed(5)
    imgs = [torch.rand(30, 40, 3), torch.rand(50, 20, 3)]
    out = preprocess_references(imgs, size=64)
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out[1], preprocess_reference(imgs[1], size=64))
    assert preprocess_references([]).shape == (0, 3, 224, 224)
    with pytest.raises(InputError, match="reference image 2"):
        preprocess_references([imgs[0], torch.rand(3, 8, 8)])


# --------------------------------------------------------------------------- post-fusion

PUBLISHED = [
    f"{m}.{layer}.{p}"
    for m in ("mlp1", "mlp2")
    for layer in ("layernorm", "fc1", "fc2")
    for p in ("weight", "bias")
] + ["layer_norm.weight", "layer_norm.bias"]


def randomized_postfuse(d: int, seed: int = 0) -> PostfuseModule:
    torch.manual_seed(seed)
    m = PostfuseModule(d)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.ndim == 1 else 0.0) * 0.3)
    return m


def hand_postfuse(sd: dict, t: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    def mlp(prefix, x, residual):
        y = F.layer_norm(
            x,
            x.shape[-1:],
            sd[f"{prefix}.layernorm.weight"],
            sd[f"{prefix}.layernorm.bias"],
            eps=1e-5,
        )
        y = F.linear(y, sd[f"{prefix}.fc1.weight"], sd[f"{prefix}.fc1.bias"])
        y = 0.5 * y * (1 + torch.erf(y / 2**0.5))
        y = F.linear(y, sd[f"{prefix}.fc2.weight"], sd[f"{prefix}.fc2.bias"])
        return y + x if residual else y

    h = mlp("mlp1", torch.cat([t, o], -1), False) + t
    h = mlp("mlp2", h, True)
    return F.layer_norm(h, h.shape[-1:], sd["layer_norm.weight"], sd["layer_norm.bias"], eps=1e-5)


def test_postfuse_state_dict_names_and_shapes():
    sd = PostfuseModule(8).state_dict()
    assert sorted(sd) == sorted(PUBLISHED)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["mlp1.layernorm.weight"] == (16,)
    assert shapes["mlp1.fc1.weight"] == (8, 16) and shapes["mlp1.fc1.bias"] == (8,)
    assert shapes["mlp1.fc2.weight"] == (8, 8)
    assert shapes["mlp2.layernorm.weight"] == (8,)
    assert shapes["mlp2.fc1.weight"] == (8, 8) and shapes["mlp2.fc2.weight"] == (8, 8)
    assert shapes["layer_norm.weight"] == (8,)


def test_postfuse_default_dim_is_sd15():
    sd = PostfuseModule().state_dict()
    assert tuple(sd["mlp1.fc1.weight"].shape) == (768, 1536)
    assert tuple(sd["layer_norm.bias"].shape) == (768,)


def test_postfuse_loads_published_keys_strictly():
    src = randomized_postfuse(8, seed=3)
    published = {f"postfuse_module.{k}": v for k, v in src.state_dict().items()}
    dst = PostfuseModule(8)
    dst.load_state_dict({k.removeprefix("postfuse_module."): v for k, v in published.items()})
    for k, v in dst.state_dict().items():
        assert torch.equal(v, src.state_dict()[k])


def test_postfuse_forward_matches_hand_implementation():
    m = randomized_postfuse(8)
    torch.manual_seed(10)
    t, o = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    torch.testing.assert_close(m(t, o), hand_postfuse(m.state_dict(), t, o))


def test_postfuse_broadcasts_and_checks_dims():
    m = randomized_postfuse(8)
    torch.manual_seed(11)
    t, o = torch.randn(2, 3, 8), torch.randn(3, 8)
    torch.testing.assert_close(m(t, o), m(t, o.expand(2, 3, 8)))
    with pytest.raises(InputError, match="8-d"):
        m(torch.randn(3, 8), torch.randn(3, 6))


def test_mlp_residual_and_validation():
    torch.manual_seed(12)
    mlp = MLP(4, 6, 4, use_residual=True)
    x = torch.randn(2, 4)
    no_res = mlp.fc2(mlp.act(mlp.fc1(mlp.layernorm(x))))
    torch.testing.assert_close(mlp(x), no_res + x)
    with pytest.raises(ValueError):
        MLP(4, 6, 5, use_residual=True)


# --------------------------------------------------------------------------- conditioning


def test_subject_conditioning_only_bound_positions_change():
    m = randomized_postfuse(8)
    torch.manual_seed(13)
    th = torch.randn(2, 10, 8)
    before = th.clone()
    img = torch.randn(2, 8)
    out = subject_conditioning(th, [3, 7], img, m)
    assert torch.equal(th, before)  # input not mutated
    assert out is not th
    keep = [i for i in range(10) if i not in (3, 7)]
    assert torch.equal(out[:, keep], th[:, keep])
    sd = m.state_dict()
    for i, p in enumerate([3, 7]):
        want = hand_postfuse(sd, th[:, p], img[i].expand(2, 8))
        torch.testing.assert_close(out[:, p], want)
        assert not torch.allclose(out[:, p], th[:, p])


def test_subject_conditioning_per_batch_embeds():
    m = randomized_postfuse(8)
    torch.manual_seed(14)
    th = torch.randn(2, 6, 8)
    img = torch.randn(2, 1, 8)
    out = subject_conditioning(th, [2], img, m)
    for b in range(2):
        torch.testing.assert_close(out[b, 2], hand_postfuse(m.state_dict(), th[b, 2], img[b, 0]))
    # (1, S, D) broadcasts like (S, D)
    torch.testing.assert_close(
        subject_conditioning(th, [2], img[:1], m), subject_conditioning(th, [2], img[0], m)
    )


def test_subject_conditioning_dtype_and_zero_subjects():
    m = randomized_postfuse(8)
    th = torch.randn(1, 5, 8, dtype=torch.float64)
    out = subject_conditioning(th, [4], torch.randn(1, 8), m)
    assert out.dtype == torch.float64
    empty = subject_conditioning(th, [], torch.zeros(0, 8), m)
    assert torch.equal(empty, th) and empty is not th


def test_subject_conditioning_errors():
    m = PostfuseModule(8)
    th = torch.randn(1, 5, 8)
    with pytest.raises(PromptError, match="2 <\\|image\\|> marker.*1 reference image"):
        subject_conditioning(th, [1, 2], torch.randn(1, 8), m)
    for bad in (5, -1):
        with pytest.raises(InputError, match="outside the 5"):
            subject_conditioning(th, [bad], torch.randn(1, 8), m)
    with pytest.raises(InputError, match="image embeddings 6-d"):
        subject_conditioning(th, [1], torch.randn(1, 6), m)
    with pytest.raises(InputError, match="text hidden states are 6-d"):
        subject_conditioning(torch.randn(1, 5, 6), [1], torch.randn(1, 6), m)
    with pytest.raises(InputError, match="repeat"):
        subject_conditioning(th, [1, 1], torch.randn(2, 8), m)
    with pytest.raises(InputError, match="batch=1"):
        subject_conditioning(th, [1], torch.randn(3, 1, 8), m)
    with pytest.raises(InputError, match="batch, tokens, dim"):
        subject_conditioning(th[0], [1], torch.randn(1, 8), m)


# --------------------------------------------------------------------------- SubjectEncoder


@pytest.fixture(scope="module")
def tiny_vision():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=224,
        patch_size=32,
        projection_dim=8,
    )
    return CLIPVisionModelWithProjection(cfg).eval()


def test_subject_encoder_embed_images(tiny_vision):
    enc = SubjectEncoder(tiny_vision, randomized_postfuse(8))
    torch.manual_seed(15)
    pv = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        got = enc.embed_images(pv)
        want = tiny_vision(pixel_values=pv).image_embeds
    assert got.shape == (3, 8)
    torch.testing.assert_close(got, want)
    with pytest.raises(InputError, match="preprocess_references"):
        enc.embed_images(torch.randn(3, 224, 224))


def test_subject_encoder_resizes_other_sizes(tiny_vision):
    enc = SubjectEncoder(tiny_vision, randomized_postfuse(8))
    torch.manual_seed(16)
    pv = torch.randn(1, 3, 112, 112)
    up = F.interpolate(pv, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(enc.embed_images(pv), tiny_vision(pixel_values=up).image_embeds)


def test_subject_encoder_condition_delegates(tiny_vision):
    pf = randomized_postfuse(8)
    enc = SubjectEncoder(tiny_vision, pf)
    assert enc.image_encoder is tiny_vision and enc.postfuse is pf
    keys = enc.state_dict().keys()
    assert "postfuse.mlp1.fc1.weight" in keys and "image_encoder.visual_projection.weight" in keys
    torch.manual_seed(17)
    th, img = torch.randn(1, 7, 8), torch.randn(2, 8)
    torch.testing.assert_close(
        enc.condition(th, [1, 5], img), subject_conditioning(th, [1, 5], img, pf)
    )


def test_subject_encoder_dim_mismatch(tiny_vision):
    with pytest.raises(ModelError, match="8-d.*16-d"):
        SubjectEncoder(tiny_vision, PostfuseModule(16))
