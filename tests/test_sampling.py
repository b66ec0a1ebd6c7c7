"""The three-stage loop on fake epsilon models: routing, call counts, numerics, errors."""

from __future__ import annotations

import pytest
import torch

import facediffuser_core.engine.sampling as sampling
from facediffuser_core.engine.sampling import Conditioning, sample
from facediffuser_core.engine.schedulers import make_scheduler
from facediffuser_core.engine.snf import FusionSettings, fuse
from facediffuser_core.engine.stages import Stage
from facediffuser_core.errors import InputError, ModelError

NULL, TEXT, SUBJECT = 0.0, 1.0, 2.0


class FakeEps:
    """A deterministic, non-linear eps model that logs what it was asked."""

    prediction_type = "epsilon"

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(4, 4, generator=g) * 0.3
        self.calls: list[tuple[float, tuple[float, ...]]] = []

    def __call__(self, x, t, cond):
        labels = tuple(cond[:, 0, 0].tolist())
        self.calls.append((float(t), labels))
        mixed = torch.einsum("oc,bchw->bohw", self.weight, x)
        return torch.tanh(mixed + 0.1 * cond[:, :1, :1, None] * (1 + x.abs())) + 0.001 * float(t)


def conditioning(length: int = 77, dim: int = 8) -> Conditioning:
    return Conditioning(
        null=torch.full((1, length, dim), NULL),
        text=torch.full((1, length, dim), TEXT),
        subject=torch.full((1, length, dim), SUBJECT),
    )


def noise(batch=1, size=16, seed=0):
    return torch.randn(batch, 4, size, size, generator=torch.Generator().manual_seed(seed))


def run(tdm, sdm, steps=50, start=15, final=30, scheduler="ddim", **kw):
    return sample(
        tdm,
        sdm,
        make_scheduler(scheduler),
        noise(kw.pop("batch", 1)),
        conditioning(),
        steps=steps,
        start_merge_step=start,
        final_step=final,
        progress=False,
        **kw,
    )


def test_stage_routing_and_call_counts():
    tdm, sdm = FakeEps(1), FakeEps(2)
    result = run(tdm, sdm)
    stages = [r.stage for r in result.records]
    assert stages == [Stage.SCENE] * 16 + [Stage.FUSION] * 15 + [Stage.SUBJECT] * 19
    # 65 batch-of-two calls in all: TDM in stages 1-2, SDM in stages 2-3, never anything else
    assert result.model_calls == {"tdm": 31, "sdm": 34}
    assert len(tdm.calls) == 31 and len(sdm.calls) == 34
    timesteps = [r.timestep for r in result.records]
    assert [t for t, _ in tdm.calls] == timesteps[:31]
    assert [t for t, _ in sdm.calls] == timesteps[16:]
    # TDM reads [null, text]; SDM reads [text, subject] (text as its unconditional branch)
    assert {labels for _, labels in tdm.calls} == {(NULL, TEXT)}
    assert {labels for _, labels in sdm.calls} == {(TEXT, SUBJECT)}


def test_saliency_only_in_the_fusion_stage(monkeypatch):
    calls = []
    real = sampling.fuse_with_saliency
    monkeypatch.setattr(
        sampling, "fuse_with_saliency", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    result = run(FakeEps(1), FakeEps(2))
    assert len(calls) == 15
    for r in result.records:
        has_maps = r.saliency_tdm is not None
        assert has_maps == (r.stage is Stage.FUSION)
        if has_maps:
            assert r.sdm_mask.shape == (1, 1, 16, 16)
            torch.testing.assert_close(r.saliency_sdm.sum(), torch.tensor(1.0))


def reference_loop(tdm, sdm, x, steps, start, final, w):
    """The reference algorithm written out independently (DDIM, batch-of-two calls)."""
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(steps)
    c = conditioning()
    tdm_c = torch.cat([c.null, c.text])
    sdm_c = torch.cat([c.text, c.subject])
    for i, t in enumerate(scheduler.timesteps):
        inp = torch.cat([x, x])
        if i <= start:
            n, tx = tdm(inp, t, tdm_c).chunk(2)
            e = n + w * (tx - n)
        elif i <= final:
            n, tx = tdm(inp, t, tdm_c).chunk(2)
            tx2, su = sdm(inp, t, sdm_c).chunk(2)
            e, _ = fuse(n + w * (tx - n), tx2 + w * (su - tx2), w * (tx - n), w * (su - tx2))
        else:
            tx2, su = sdm(inp, t, sdm_c).chunk(2)
            e = tx2 + w * (su - tx2)
        x = scheduler.step(e, t, x).prev_sample
    return x


def test_matches_an_independent_reference_loop():
    result = run(FakeEps(1), FakeEps(2), steps=12, start=3, final=7, guidance_scale=5.0)
    expected = reference_loop(FakeEps(1), FakeEps(2), noise(), 12, 3, 7, 5.0)
    torch.testing.assert_close(result.latents, expected, rtol=0, atol=1e-6)


def test_fusion_really_mixes_both_models():
    result = run(FakeEps(1), FakeEps(2), steps=20, start=4, final=14)
    masks = torch.stack([r.sdm_mask for r in result.records if r.stage is Stage.FUSION])
    assert 0 < masks.mean() < 1


def test_batch_and_shared_conditioning():
    tdm, sdm = FakeEps(1), FakeEps(2)
    result = run(tdm, sdm, steps=6, start=1, final=3, batch=3)
    assert result.latents.shape == (3, 4, 16, 16)
    assert len(tdm.calls[0][1]) == 6  # 3 unconditional + 3 conditional rows in one call
    single = run(FakeEps(1), FakeEps(2), steps=6, start=1, final=3, batch=1)
    # the first image of a batch equals the same noise sampled alone
    torch.testing.assert_close(result.latents[:1], single.latents, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "pndm", "euler_ancestral"])
def test_other_schedulers(name):
    gen = torch.Generator().manual_seed(0)
    result = run(FakeEps(1), FakeEps(2), steps=10, start=2, final=6, scheduler=name, generator=gen)
    assert torch.isfinite(result.latents).all()
    stages = [r.stage for r in result.records]
    assert stages[0] is Stage.SCENE and stages[-1] is Stage.SUBJECT
    assert Stage.FUSION in stages
    # stage follows the step of each evaluation, and steps never go backwards
    steps = [r.step for r in result.records]
    assert steps == sorted(steps) and steps[-1] == 9


def test_long_prompt_conditioning_is_tiled():
    tdm, sdm = FakeEps(1), FakeEps(2)
    c = conditioning()
    long = Conditioning(null=c.null, text=c.text.repeat(1, 2, 1), subject=c.subject.repeat(1, 2, 1))
    result = sample(
        tdm,
        sdm,
        make_scheduler(),
        noise(),
        long,
        steps=4,
        start_merge_step=0,
        final_step=2,
        progress=False,
    )
    assert torch.isfinite(result.latents).all()


def test_wrong_shape_model_is_refused():
    def bad(x, t, cond):
        return x[:, :3]

    with pytest.raises(ModelError, match="epsilon-prediction UNet"):
        run(bad, FakeEps(2), steps=4, start=1, final=2)


def test_v_prediction_model_is_refused():
    v = FakeEps(1)
    v.prediction_type = "v_prediction"
    with pytest.raises(ModelError, match="v-prediction"):
        run(v, FakeEps(2), steps=4, start=1, final=2)


def test_nan_stops_with_the_step_named():
    sdm = FakeEps(2)

    def broken(x, t, cond):
        return sdm(x, t, cond) * float("nan")

    with pytest.raises(ModelError, match=r"SDM produced NaN/inf at step 2 \(fusion stage"):
        run(FakeEps(1), broken, steps=6, start=1, final=3)


def test_bad_boundaries_and_conditioning_batch():
    with pytest.raises(InputError, match="final_step"):
        run(FakeEps(1), FakeEps(2), steps=10, start=6, final=3)
    c = conditioning()
    bad = Conditioning(null=c.null, text=c.text.repeat(2, 1, 1), subject=c.subject)
    with pytest.raises(InputError, match="batch 2"):
        sample(
            FakeEps(1),
            FakeEps(2),
            make_scheduler(),
            noise(batch=3),
            bad,
            steps=2,
            start_merge_step=0,
            final_step=1,
            progress=False,
        )


def test_soft_fusion_setting_reaches_the_loop():
    hard = run(FakeEps(1), FakeEps(2), steps=10, start=2, final=6)
    soft = run(
        FakeEps(1), FakeEps(2), steps=10, start=2, final=6, fusion=FusionSettings(mode="soft")
    )
    soft_masks = torch.stack([r.sdm_mask for r in soft.records if r.stage is Stage.FUSION])
    assert ((soft_masks > 0) & (soft_masks < 1)).any()
    assert not torch.equal(hard.latents, soft.latents)


def test_overlap_mode_gives_identical_results():
    """The concurrent fusion-stage calls change nothing but timing (CPU: a thread)."""
    sequential = run(FakeEps(1), FakeEps(2), steps=12, start=3, final=7)
    tdm, sdm = FakeEps(1), FakeEps(2)
    overlapped = run(tdm, sdm, steps=12, start=3, final=7, overlap=True)
    assert torch.equal(sequential.latents, overlapped.latents)
    assert overlapped.model_calls == sequential.model_calls == {"tdm": 8, "sdm": 8}
    for a, b in zip(sequential.records, overlapped.records, strict=True):
        assert a.stage == b.stage
        if a.sdm_mask is not None:
            assert torch.equal(a.sdm_mask, b.sdm_mask)


def test_overlap_mode_still_stops_on_nan():
    sdm = FakeEps(2)

    def broken(x, t, cond):
        return sdm(x, t, cond) * float("nan")

    with pytest.raises(ModelError, match="SDM produced NaN/inf at step 2"):
        run(FakeEps(1), broken, steps=6, start=1, final=3, overlap=True)
