"""The headless pipeline on the tiny models loaded from their real-format files."""

from __future__ import annotations

import pytest
import torch

import facediffuser_core.pipeline as pipeline_module
from facediffuser_core.engine.stages import Stage
from facediffuser_core.errors import InputError, ModelError, PromptError
from facediffuser_core.pipeline import FaceDiffuserPipeline, GenerateSettings

PROMPT = "a man <|image|> and a woman <|image|> at the beach"


def settings(**kw):
    base = dict(prompt=PROMPT, width=64, height=64, steps=8, start_merge_step=2, final_step=5)
    base.update(kw)
    return GenerateSettings(**base)


def test_generates_images_with_fusion_records(tiny_pipeline, tiny_references):
    result = tiny_pipeline.generate(settings(num_images=2), tiny_references, progress=False)
    assert len(result.images) == 2
    assert result.images[0].size == (64, 64)
    assert result.latents.shape == (2, 4, 8, 8)
    stages = [r.stage for r in result.sampling.records]
    assert stages.count(Stage.FUSION) == 3 and stages.count(Stage.SCENE) == 3
    assert result.sampling.model_calls == {"tdm": 6, "sdm": 5}
    assert result.reference_crops.shape == (2, 3, 224, 224)


def test_same_seed_same_image_other_seed_other_image(tiny_pipeline, tiny_references):
    a = tiny_pipeline.generate(settings(seed=7), tiny_references, progress=False)
    b = tiny_pipeline.generate(settings(seed=7), tiny_references, progress=False)
    c = tiny_pipeline.generate(settings(seed=8), tiny_references, progress=False)
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents, c.latents)


def test_subject_conditioning_changes_only_the_bound_words(tiny_pipeline, tiny_references):
    cond, _ = tiny_pipeline.encode(settings(), tiny_references)
    changed = (cond.subject - cond.text).abs().amax(dim=-1)[0]
    positions = changed.nonzero().flatten().tolist()
    assert len(positions) == 2
    # the bound tokens are the last tokens of "man" and "woman" (chunk offset 1 for BOS)
    tok = tiny_pipeline.tokenizer
    ids = tok("a man and a woman at the beach", add_special_tokens=False)["input_ids"]
    man_end = len(tok("a man", add_special_tokens=False)["input_ids"])
    woman_end = len(tok("a man and a woman", add_special_tokens=False)["input_ids"])
    assert positions == [man_end, woman_end]
    assert len(ids) > woman_end


def test_reference_order_binds_marker_order(tiny_pipeline, tiny_references):
    a, b = tiny_references
    ab, _ = tiny_pipeline.encode(settings(), [a, b])
    ba, _ = tiny_pipeline.encode(settings(), [b, a])
    aa, _ = tiny_pipeline.encode(settings(), [a, a])
    bb, _ = tiny_pipeline.encode(settings(), [b, b])
    first, second = (ab.subject - ab.text).abs().amax(dim=-1)[0].nonzero().flatten().tolist()
    # image 1 binds marker 1, image 2 binds marker 2
    torch.testing.assert_close(ab.subject[:, first], aa.subject[:, first])
    torch.testing.assert_close(ab.subject[:, second], bb.subject[:, second])
    assert not torch.allclose(ab.subject[:, first], ba.subject[:, first])
    assert not torch.allclose(ab.subject[:, second], ba.subject[:, second])


def test_long_prompt_binds_in_the_second_chunk(tiny_pipeline, tiny_references):
    filler = " ".join(["beach"] * 90)
    prompt = f"a photo of the {filler} with a man <|image|> standing"
    cond, _ = tiny_pipeline.encode(settings(prompt=prompt), tiny_references[:1])
    assert cond.text.shape[1] % 77 == 0 and cond.text.shape[1] >= 154
    changed = (cond.subject - cond.text).abs().amax(dim=-1)[0].nonzero().flatten().tolist()
    assert len(changed) == 1 and changed[0] >= 77
    result = tiny_pipeline.generate(settings(prompt=prompt), tiny_references[:1], progress=False)
    assert torch.isfinite(result.latents).all()


def test_tdm_own_text_encoder_option(tiny_pipeline, tiny_references):
    cond, _ = tiny_pipeline.encode(settings(tdm_text_encoder=True), tiny_references)
    assert cond.tdm_text is not None and cond.tdm_null is not None
    # the tiny TDM shares the SDM's text encoder, as the real ones share SD1.5's
    torch.testing.assert_close(cond.tdm_text, cond.text)


@pytest.mark.parametrize(
    ("kw", "n_refs", "error", "match"),
    [
        ({}, 1, PromptError, "2 <\\|image\\|> marker"),
        ({"prompt": "a beach at night"}, 0, PromptError, "no <\\|image\\|> marker"),
        ({"width": 100}, 2, InputError, "multiple of 8"),
        ({"start_merge_step": 6, "final_step": 3}, 2, InputError, "final_step"),
        ({"scheduler": "nope"}, 2, InputError, "unknown scheduler"),
    ],
)
def test_bad_requests_fail_before_any_model_work(
    tiny_pipeline, tiny_references, monkeypatch, kw, n_refs, error, match
):
    def no_sampling(*a, **k):
        raise AssertionError("sampling started before validation")

    monkeypatch.setattr(pipeline_module, "sample", no_sampling)
    refs = (tiny_references * 2)[:n_refs]
    with pytest.raises(error, match=match):
        tiny_pipeline.generate(settings(**kw), refs, progress=False)


def test_swapped_models_are_refused(tiny_pipeline):
    with pytest.raises(ModelError, match="looks like a TDM"):
        FaceDiffuserPipeline(tiny_pipeline.tdm, tiny_pipeline.sdm, tiny_pipeline.tokenizer)


def test_several_photos_of_a_person_condition_on_their_mean_embedding(
    tiny_pipeline, tiny_references
):
    a, b = tiny_references
    flipped = a.flip(1)  # a second, different photo of person 1
    cond, crops = tiny_pipeline.encode(settings(), [[a, flipped], b])
    assert crops.shape[0] == 3  # every photo went through the image encoder
    encoder = tiny_pipeline.sdm.subject_encoder
    with torch.no_grad():
        each = encoder.embed_images(crops)
        mean = torch.stack([each[:2].mean(dim=0), each[2]])
        plain, _ = tiny_pipeline.encode(settings(), [a, b])
        text = cond.text
        positions = (plain.subject - plain.text).abs().amax(dim=-1)[0].nonzero().flatten()
        expected = encoder.condition(text, positions.tolist(), mean)
    torch.testing.assert_close(cond.subject, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(cond.subject, plain.subject)
    # a list with one photo is the same as the plain image
    single, _ = tiny_pipeline.encode(settings(), [[a], [b]])
    assert torch.equal(single.subject, plain.subject)


def test_zero_region_keeps_the_tdm_everywhere_in_fusion(tiny_pipeline, tiny_references):
    free = tiny_pipeline.generate(settings(), tiny_references, progress=False)
    none = tiny_pipeline.generate(
        settings(), tiny_references, progress=False, region=torch.zeros(64, 64)
    )
    full = tiny_pipeline.generate(
        settings(), tiny_references, progress=False, region=torch.ones(1, 64, 64)
    )
    fusion = [r for r in none.sampling.records if r.stage is Stage.FUSION]
    assert fusion and all(r.sdm_mask.abs().max() == 0 for r in fusion)  # the sheet shows it
    assert any(r.sdm_mask.max() > 0 for r in free.sampling.records if r.sdm_mask is not None)
    assert torch.equal(full.latents, free.latents)
    assert not torch.equal(none.latents, free.latents)


def test_encode_subject_takes_any_text_encoder(tiny_pipeline, tiny_references):
    """One recipe for every host: the text encoder is passed in and its output is what the
    post-fusion binds to (here doubled, as a host's own encoder might scale it)."""
    from facediffuser_core.subject.encode import encode_subject
    from facediffuser_core.subject.text import encode_chunks, encoder_for, special_ids

    sdm = tiny_pipeline.sdm
    kw = dict(
        tokenize=encoder_for(tiny_pipeline.tokenizer),
        special=special_ids(tiny_pipeline.tokenizer),
        subject_encoder=sdm.subject_encoder,
    )
    with torch.no_grad():
        plain = encode_subject(
            PROMPT, tiny_references, encode_text=lambda c: encode_chunks(sdm.text_encoder, c), **kw
        )
        doubled = encode_subject(
            PROMPT,
            tiny_references,
            encode_text=lambda c: 2 * encode_chunks(sdm.text_encoder, c),
            **kw,
        )
    cond, crops = tiny_pipeline.encode(settings(), tiny_references)
    assert torch.equal(plain.text, cond.text) and torch.equal(plain.subject, cond.subject)
    assert torch.equal(plain.crops, crops)
    assert torch.equal(doubled.text, 2 * plain.text)
    marked = list(plain.chunks.positions)
    unmarked = [i for i in range(plain.text.shape[1]) if i not in marked]
    assert torch.equal(doubled.subject[:, unmarked], 2 * plain.subject[:, unmarked])
    assert not torch.equal(doubled.subject[:, marked], 2 * plain.subject[:, marked])


def test_a_request_is_validated_once_and_used_as_is(tiny_pipeline, tiny_references):
    from facediffuser_core.pipeline import Request, check_request

    request = check_request(settings(num_images=1), tiny_references)
    assert isinstance(request, Request) and request.prompt.num_subjects == 2
    assert request.boundaries.fractions == (3 / 8, 6 / 8)  # start 2, final 5 of 8 steps
    a = tiny_pipeline.generate(request, progress=False)
    b = tiny_pipeline.generate(settings(num_images=1), tiny_references, progress=False)
    assert torch.equal(a.latents, b.latents)
    with pytest.raises(InputError, match="already holds its people"):
        tiny_pipeline.generate(request, tiny_references, progress=False)


def test_bad_photos_are_refused_before_the_text_encoder_runs(tiny_pipeline, tiny_references):
    from facediffuser_core.subject.encode import encode_subject
    from facediffuser_core.subject.text import encoder_for, special_ids

    encoded = []
    broken = torch.full_like(tiny_references[1], float("nan"))
    with pytest.raises(InputError):
        encode_subject(
            PROMPT,
            [tiny_references[0], broken],
            tokenize=encoder_for(tiny_pipeline.tokenizer),
            special=special_ids(tiny_pipeline.tokenizer),
            encode_text=encoded.append,
            subject_encoder=tiny_pipeline.sdm.subject_encoder,
        )
    assert encoded == []
