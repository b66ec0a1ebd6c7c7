"""The node layer without ComfyUI: registration fallbacks and the SNF guider's routing.

A handful of fake ComfyUI modules (only the names the nodes call) stand in for the host,
so CI checks which model receives which conditioning at every sigma, the stage boundaries,
per-run state, and the refusals. The real host is exercised in tests/integration.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import pytest
import torch

from tests import fake_comfy_api

ROOT = Path(__file__).resolve().parents[1]
PACK = "facediffuser_pack_offline"
CONTEXT = 8


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _value(conditioning) -> float:
    """The constant a test conditioning was filled with."""
    return float(conditioning[0][0].flatten()[0])


def _fake_host() -> dict[str, types.ModuleType]:
    calls: list[tuple] = []

    class CFGGuider:
        def __init__(self, model_patcher):
            self.model_patcher = model_patcher
            self.model_options = model_patcher.model_options
            self.original_conds = {}
            self.cfg = 1.0

        def set_cfg(self, cfg):
            self.cfg = cfg

        def inner_set_conds(self, conds):
            self.original_conds.update(conds)

        def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
            self.conds = dict(self.original_conds)
            return self.outer_sample(noise, latent_image, sampler, sigmas)

        def outer_sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
            self.inner_model = self.model_patcher.model
            options = {**self.model_options, "transformer_options": {"sample_sigmas": sigmas}}
            return sampler(self, sigmas, options, noise)

    def calc_cond_batch(model, conds, x, timestep, options):
        calls.append(("batch", model.name, tuple(c for c in conds), float(timestep[0])))
        return [x * 0 + model.bias + _value(cond) for cond in conds]

    def sampling_function(model, x, timestep, uncond, cond, cfg, options, seed=None):
        """ComfyUI's order: predict [cond, uncond], pre-CFG hooks, CFG (or its hook)."""
        calls.append(("cfg", model.name, (uncond, cond), float(timestep[0])))
        pattern = getattr(model, "pattern", 1.0)  # a spatial pattern makes saliency vary
        out = [x * 0 + model.bias + _value(c) * pattern for c in (cond, uncond)]
        for fn in options.get("sampler_pre_cfg_function", []):
            out = fn({"conds_out": out, "cond_scale": cfg, "input": x, "sigma": timestep})
        if "sampler_cfg_function" in options:
            args = {"cond": x - out[0], "uncond": x - out[1], "cond_scale": cfg, "input": x}
            return x - options["sampler_cfg_function"](args)
        return out[1] + (out[0] - out[1]) * cfg

    model_sampling = _module("comfy.model_sampling")
    exec(
        "class EPS: pass\nclass V_PREDICTION(EPS): pass\nclass ModelSamplingDiscrete: pass\n",
        model_sampling.__dict__,
    )
    latent_formats = _module("comfy.latent_formats")
    exec("class SD15: pass\nclass SDXL: pass\n", latent_formats.__dict__)
    comfy = _module("comfy")
    comfy.__path__ = []
    modules = {
        "comfy": comfy,
        "comfy.samplers": _module(
            "comfy.samplers",
            CFGGuider=CFGGuider,
            calc_cond_batch=calc_cond_batch,
            sampling_function=sampling_function,
            KSampler=type("KSampler", (), {"SAMPLERS": ["ddim"], "SCHEDULERS": ["normal"]}),
            calls=calls,
        ),
        "comfy.model_sampling": model_sampling,
        "comfy.latent_formats": latent_formats,
        "comfy.model_management": _module(
            "comfy.model_management",
            get_torch_device=lambda: "cpu",
            intermediate_device=lambda: "cpu",
            get_total_memory=lambda device=None: 1024**3,
            throw_exception_if_processing_interrupted=lambda: None,
        ),
        "comfy.model_patcher": _module(
            "comfy.model_patcher", create_model_options_clone=lambda o: {**o}
        ),
        "comfy.sample": _module("comfy.sample"),
        "comfy.utils": _module("comfy.utils", PROGRESS_BAR_ENABLED=False),
        "latent_preview": _module("latent_preview"),
    }
    for name, module in modules.items():
        if name.startswith("comfy."):
            setattr(comfy, name.split(".", 1)[1], module)
    return modules


def _load_pack(monkeypatch, caplog, dynamic=True, extra=None, contract=None):
    """The pack on the fake host; ``extra``: more host modules; ``contract``: the source of
    the pack's facediffuser_core/node_names.py to load instead of the file's."""
    fakes = {**_fake_host(), **fake_comfy_api.make(dynamic), **(extra or {})}
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
        if name.startswith("comfy."):
            setattr(fakes["comfy"], name.split(".", 1)[1], module)
    if contract is not None:  # found in sys.modules, so the pack's imports take this one
        names = _module(f"{PACK}.facediffuser_core.node_names")
        exec(contract, names.__dict__)
        monkeypatch.setitem(sys.modules, names.__name__, names)
    spec = importlib.util.spec_from_file_location(
        PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    pack = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, PACK, pack)
    with caplog.at_level(logging.WARNING):
        spec.loader.exec_module(pack)
    log_text = caplog.text
    sampling = importlib.import_module(f"{PACK}.nodes.sampling")
    errors = importlib.import_module(f"{PACK}.facediffuser_core.errors")
    return types.SimpleNamespace(
        pack=pack,
        sampling=sampling,
        errors=errors,
        calls=fakes["comfy.samplers"].calls,
        fakes=fakes,
        log=log_text,
        nodes={n.define_schema().node_id: n for n in pack.NODE_LIST},
    )


@pytest.fixture()
def host(monkeypatch, caplog):
    """A host like ComfyUI 0.8.0+: V3 with Autogrow and DynamicCombo."""
    yield _load_pack(monkeypatch, caplog, dynamic=True)
    for key in [k for k in sys.modules if k.startswith(PACK)]:
        del sys.modules[key]


@pytest.fixture()
def old_host(monkeypatch, caplog):
    """A host like ComfyUI 0.3.48: V3 without dynamic inputs, aliases or advanced inputs."""
    yield _load_pack(monkeypatch, caplog, dynamic=False)
    for key in [k for k in sys.modules if k.startswith(PACK)]:
        del sys.modules[key]


class FakePatcher:
    def __init__(self, host, name, bias, prediction="EPS", latent="SD15", context=CONTEXT):
        ms = host.fakes["comfy.model_sampling"]
        lf = host.fakes["comfy.latent_formats"]
        sampling_cls = type(
            "ModelSamplingAdvanced", (ms.ModelSamplingDiscrete, getattr(ms, prediction)), {}
        )
        self.model = types.SimpleNamespace(
            name=name,
            bias=bias,
            latent_format=getattr(lf, latent)(),
            model_config=types.SimpleNamespace(unet_config={"context_dim": context}),
            # ComfyUI's SD1.5 estimate without flash attention: 0.15 MiB per latent cell
            memory_required=lambda shape: shape[0] * shape[2] * shape[3] * 0.15 * 1024**2,
        )
        self.model_options = {"transformer_options": {}}
        self._sampling = sampling_cls()
        self.pre_runs = self.cleanups = 0
        self.additional = {}

    def get_model_object(self, name):
        assert name == "model_sampling"
        return self._sampling

    def clone(self):
        twin = FakePatcher.__new__(FakePatcher)
        twin.__dict__.update(self.__dict__)
        twin.additional = {}
        return twin

    def set_additional_models(self, key, models):
        self.additional[key] = models

    def pre_run(self):
        self.pre_runs += 1

    def cleanup(self):
        self.cleanups += 1


def cond(value: float, width: int = CONTEXT):
    return [[torch.full((1, 77, width), value), {}]]


def test_missing_host_parts_disable_only_the_nodes_that_need_them(host):
    mappings = host.nodes
    assert not hasattr(host.pack, "NODE_CLASS_MAPPINGS")  # it would hide the V3 entry point
    # the fake host has no comfy.sd / folder_paths: the loaders are off, the rest works
    assert "FaceDiffuserKSampler" in mappings and "FaceDiffuserSNFGuider" in mappings
    assert "FaceDiffuserSubjectEncode" in mappings
    assert "FaceDiffuserLoadSDM" not in mappings
    assert "Load Face-diffuser SDM" in host.log
    assert "this ComfyUI lacks folder_paths; the pack needs ComfyUI >=" in host.log


def _run(host, guider, sigmas, extra_sigmas=()):
    x = torch.zeros(1, 4, 8, 8)

    def sampler(g, sigmas, options, noise):
        evaluation = sorted([*sigmas[:-1].tolist(), *extra_sigmas], reverse=True)
        for s in evaluation:
            g.predict_noise(x, torch.tensor([s]), options)
        return noise

    host.calls.clear()
    guider.sample(x, x, sampler, sigmas)
    return list(host.calls)


def test_guider_routes_each_stage_to_its_models(host):
    tdm, sdm = FakePatcher(host, "tdm", 0.0), FakePatcher(host, "sdm", 100.0)
    guider = host.sampling.SNFGuider(tdm, sdm, 5.0, (0.32, 0.62))
    assert guider.model_patcher.additional == {"facediffuser_sdm": [sdm]}
    negative, text, subject = cond(0.0), cond(1.0), cond(2.0)
    guider.set_conds(negative, text, subject)
    sigmas = torch.linspace(10, 0, 11)  # 10 steps: scene 0-2, fusion 3-5, subject 6-9
    calls = _run(host, guider, sigmas)
    kinds = [(kind, name) for kind, name, _, _ in calls]
    assert kinds[:3] == [("cfg", "tdm")] * 3
    assert kinds[3:9] == [("cfg", "tdm"), ("cfg", "sdm")] * 3
    assert kinds[9:] == [("cfg", "sdm")] * 4
    # TDM reads [negative, text]; SDM reads [text, subject]
    assert calls[0][2] == (negative, text) and calls[3][2] == (negative, text)
    assert calls[4][2] == (text, subject) and calls[-1][2] == (text, subject)
    assert sdm.pre_runs == 1 and sdm.cleanups == 1
    stages = [r.stage.value for r in guider.last_records]
    assert stages == ["scene"] * 3 + ["fusion"] * 3 + ["subject"] * 4
    fusion = [r for r in guider.last_records if r.stage.value == "fusion"]
    assert all(r.sdm_mask is not None and r.sdm_mask.shape == (1, 1, 8, 8) for r in fusion)


def test_intermediate_sigmas_use_the_stage_of_their_interval(host):
    tdm, sdm = FakePatcher(host, "tdm", 0.0), FakePatcher(host, "sdm", 100.0)
    guider = host.sampling.SNFGuider(tdm, sdm, 5.0, (0.32, 0.62))
    guider.set_conds(cond(0.0), cond(1.0), cond(2.0))
    sigmas = torch.linspace(10, 0, 11)
    # 7.5 lies in step 2 (scene), 4.5 in step 5 (fusion), as SDE/2nd-order samplers evaluate
    calls = _run(host, guider, sigmas, extra_sigmas=(7.5, 4.5))
    by_sigma = {}
    for _kind, name, _, sigma in calls:
        by_sigma.setdefault(sigma, []).append(name)
    assert by_sigma[7.5] == ["tdm"]
    assert by_sigma[4.5] == ["tdm", "sdm"]
    assert len(guider.last_records) == 10  # one record per step, however many evaluations


def test_reuse_resets_per_run_state(host):
    tdm, sdm = FakePatcher(host, "tdm", 0.0), FakePatcher(host, "sdm", 100.0)
    guider = host.sampling.SNFGuider(tdm, sdm, 5.0, (0.32, 0.62))
    guider.set_conds(cond(0.0), cond(1.0), cond(2.0))
    _run(host, guider, torch.linspace(10, 0, 11))
    assert len(guider.last_records) == 10
    _run(host, guider, torch.linspace(10, 0, 5))  # the cached guider, a 4-step schedule
    assert [r.step for r in guider.last_records] == [0, 1, 2, 3]
    assert sdm.pre_runs == 2 and sdm.cleanups == 2


def test_tdm_text_replaces_only_the_tdm_positive(host):
    tdm, sdm = FakePatcher(host, "tdm", 0.0, context=16), FakePatcher(host, "sdm", 100.0)
    guider = host.sampling.SNFGuider(tdm, sdm, 5.0, (0.32, 0.62))
    negative, tdm_text = cond(0.0, 16), cond(3.0, 16)
    text, subject = cond(1.0), cond(2.0)
    guider.set_conds(negative, text, subject, tdm_text)
    calls = _run(host, guider, torch.linspace(10, 0, 11))
    assert calls[0][2] == (negative, tdm_text)
    assert calls[4][2] == (text, subject)


def test_refusals_name_the_problem(host):
    InputError, ModelError = host.errors.InputError, host.errors.ModelError
    make = host.sampling.SNFGuider
    sdm = FakePatcher(host, "sdm", 1.0)
    with pytest.raises(ModelError, match="predicts V_PREDICTION"):
        make(FakePatcher(host, "tdm", 0.0, prediction="V_PREDICTION"), sdm, 5.0, (0.32, 0.62))
    with pytest.raises(ModelError, match="not SD1.5"):
        make(FakePatcher(host, "tdm", 0.0, latent="SDXL"), sdm, 5.0, (0.32, 0.62))
    guider = make(FakePatcher(host, "tdm", 0.0), sdm, 5.0, (0.32, 0.62))
    with pytest.raises(ModelError, match="'subject' is 12-wide"):
        guider.set_conds(cond(0.0), cond(1.0), cond(2.0, 12))
    with pytest.raises(InputError, match="scene_end"):
        host.sampling.SNFGuiderNode.execute(  # as ComfyUI calls it: by input name
            tdm_model=FakePatcher(host, "tdm", 0.0),
            sdm_model=sdm,
            negative=cond(0.0),
            text=cond(1.0),
            subject=cond(2.0),
            cfg=5.0,
            scene_end=0.7,
            fusion_end=0.3,
        )


def test_inspection_is_rendered_only_when_something_reads_it(host):
    used = host.sampling._outputs_used
    graph = {"20": {"inputs": {}}, "30": {"inputs": {"samples": ["20", 0]}}}
    assert not used(graph, "20", (1, 2))  # only the latent is read
    graph["40"] = {"inputs": {"images": ["20", 1]}}
    assert used(graph, "20", (1, 2))
    assert used(None, None, (1, 2))  # called outside a queued graph: assume used


def test_person_inputs_are_taken_in_marker_order(host):
    people = importlib.import_module(f"{PACK}.nodes.people").people_in_order
    a, b = torch.zeros(1, 8, 6, 3), torch.ones(1, 5, 7, 4)  # sizes may differ; alpha dropped
    out = people(a, b)
    assert [t.shape for t in out] == [(1, 8, 6, 3), (1, 5, 7, 3)] and out[1].max() == 1
    with pytest.raises(host.errors.InputError, match="person_2 is empty but person_3"):
        people(a, None, b)
    photos = people(torch.zeros(2, 8, 8, 4), a)  # a batch: two photos of person 1
    assert [t.shape for t in photos] == [(2, 8, 8, 3), (1, 8, 6, 3)]
    with pytest.raises(host.errors.InputError, match="person_1 holds an empty image batch"):
        people(torch.zeros(0, 8, 8, 3))
    with pytest.raises(host.errors.InputError, match="person_2 is not an IMAGE"):
        people(a, torch.zeros(8, 8, 3))


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    from facediffuser_core.subject.text import load_tokenizer
    from facediffuser_core.tiny.tokenizer import write_tiny_tokenizer

    return load_tokenizer(write_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer"))


class FakeSubjectEncoder:
    """Records what Subject Encode feeds the image tower and post-fusion."""

    def __init__(self):
        self.towered, self.fused = [], []

    def embed_images(self, pixels):
        self.towered.append(pixels)
        return pixels.flatten(1)[:, ::997].float() * 3 + 1  # (N, D): one row per photo

    def condition(self, text, positions, embeds):
        self.fused.append(embeds)
        return text + 1


def _encode(host, tokenizer, prompt, *people):
    clip = types.SimpleNamespace(
        tokenizer=types.SimpleNamespace(clip_l=types.SimpleNamespace(tokenizer=tokenizer)),
        cond_stage_model=types.SimpleNamespace(),
        encode_from_tokens=lambda tokens, return_pooled: (
            torch.zeros(1, 77 * len(tokens["l"]), CONTEXT),
            torch.zeros(1, CONTEXT),
        ),
    )
    encoder = FakeSubjectEncoder()
    node = host.nodes["FaceDiffuserSubjectEncode"]
    people_inputs = {f"person_{i}": p for i, p in enumerate(people, start=1)}
    out = node.execute(clip, encoder, prompt, object_resolution=224, **people_inputs)
    return tuple(out.args), encoder


def test_subject_encode_takes_a_batch_as_several_photos_of_one_person(host, tiny_tokenizer):
    photos = importlib.import_module(f"{PACK}.facediffuser_core.subject.photos")
    g = torch.Generator().manual_seed(0)
    alice = torch.rand(3, 40, 32, 3, generator=g)  # three photos of person 1
    bob = torch.rand(1, 24, 24, 3, generator=g)
    (subject, text, shown), encoder = _encode(
        host, tiny_tokenizer, "a man <|image|> and a woman <|image|>", alice, bob
    )
    # One tower call for all four photos, then one embedding per person into post-fusion.
    (towered,) = encoder.towered
    assert towered.shape == (4, 3, 224, 224) and shown.shape == (4, 224, 224, 3)
    (fused,) = encoder.fused
    rows = encoder.embed_images(towered)
    assert fused.shape == (2, rows.shape[1])
    torch.testing.assert_close(fused[0], rows[:3].mean(0))  # mean of the projected embeddings
    assert torch.equal(fused[1], rows[3])  # one photo: its embedding unchanged
    # The core's preprocessing, photo by photo, in person order.
    want = torch.cat(photos.preprocess_people([alice, bob], object_resolution=224))
    assert torch.equal(towered, want)
    assert subject[0][1]["facediffuser"]["role"] == "subject"

    # Each photo alone, then averaged, is the same person: the batch is not several people.
    _, encoder = _encode(host, tiny_tokenizer, "a man <|image|>", alice[:1])
    assert encoder.fused[0].shape[0] == 1
    with pytest.raises(host.errors.PromptError, match=r"marker\(s\) but 2 reference"):
        _encode(host, tiny_tokenizer, "a man <|image|>", alice, bob)


def test_subject_encode_names_the_person_and_photo_of_a_bad_image(host, tiny_tokenizer):
    bad = torch.rand(2, 16, 16, 3)
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(host.errors.InputError, match=r"reference image 2, photo 2: .*NaN"):
        _encode(host, tiny_tokenizer, "a <|image|> and b <|image|>", torch.rand(1, 8, 8, 3), bad)


def _final_denoised(host, guider, sigmas, x=None):
    """Run the guider and return each step's prediction, in step order."""
    x = torch.zeros(1, 4, 8, 8) if x is None else x
    outs = []

    def sampler(g, sigmas, options, noise):
        for s in sigmas[:-1].tolist():
            outs.append(g.predict_noise(x, torch.tensor([s]), options))
        return noise

    guider.sample(x, x, sampler, sigmas)
    return outs


def test_cfg_hooks_of_each_model_apply_in_the_fusion_stage(host):
    """A sampler_cfg_function (RescaleCFG and friends) on a MODEL changes its fused steps too."""
    tdm, sdm = FakePatcher(host, "tdm", 0.0), FakePatcher(host, "sdm", 0.0)
    sdm.model.pattern = torch.linspace(0, 1, 64).reshape(8, 8)
    plain = host.sampling.SNFGuider(tdm, sdm, 5.0, (0.0, 1.0))  # every step fuses
    plain.set_conds(cond(0.0), cond(1.0), cond(2.0))
    before = _final_denoised(host, plain, torch.linspace(10, 0, 5))

    hooked = FakePatcher(host, "sdm", 0.0)
    hooked.model.pattern = sdm.model.pattern
    hooked.model_options = {"sampler_cfg_function": lambda args: args["cond"] * 0 + 123.0}
    guider = host.sampling.SNFGuider(tdm, hooked, 5.0, (0.0, 1.0))
    guider.set_conds(cond(0.0), cond(1.0), cond(2.0))
    after = _final_denoised(host, guider, torch.linspace(10, 0, 5))
    for step, (a, b, record) in enumerate(zip(before, after, guider.last_records, strict=True)):
        won = record.sdm_mask.bool().expand_as(b)
        assert won.any(), step
        # where the SDM supplied the prediction it is the hook's: x - 123
        assert torch.equal(b[won], torch.full_like(b[won], -123.0))
        assert not torch.equal(a, b)
    # the saliency still comes from the raw predictions (hook-free): same SNF choices
    assert [r.sdm_mask.sum() for r in plain.last_records] == [
        r.sdm_mask.sum() for r in guider.last_records
    ]


def test_pre_cfg_hooks_see_the_predictions_and_keep_their_effect(host):
    seen = []

    def hook(args):
        seen.append(len(args["conds_out"]))
        return [t + 1.0 for t in args["conds_out"]]

    tdm = FakePatcher(host, "tdm", 0.0)
    tdm.model_options = {"sampler_pre_cfg_function": [hook]}
    guider = host.sampling.SNFGuider(tdm, FakePatcher(host, "sdm", 0.0), 5.0, (0.0, 1.0))
    guider.set_conds(cond(0.0), cond(1.0), cond(2.0))
    outs = _final_denoised(host, guider, torch.linspace(10, 0, 3))
    assert seen == [2, 2]  # the TDM's hook ran once per fused step
    tdm_won = ~guider.last_records[0].sdm_mask.bool().expand_as(outs[0])
    # TDM guided = (0+1) + 5 ((1+1) - (0+1)) = 6 where the TDM won
    assert torch.equal(outs[0][tdm_won], torch.full_like(outs[0][tdm_won], 6.0))


def test_a_nan_prediction_stops_with_step_stage_and_cause(host):
    tdm, sdm = FakePatcher(host, "tdm", 0.0), FakePatcher(host, "sdm", float("nan"))
    guider = host.sampling.SNFGuider(tdm, sdm, 5.0, (0.32, 0.62))
    guider.set_conds(cond(0.0), cond(1.0), cond(2.0))
    with pytest.raises(host.errors.ModelError) as err:
        _final_denoised(host, guider, torch.linspace(10, 0, 11))
    message = str(err.value)
    assert message.startswith("the SDM produced NaN/inf at step 3 (fusion stage)")
    assert "fp16 overflow" in message and "--force-fp32" in message
    assert "nothing was saved" in message


def test_a_nan_input_latent_is_refused_before_sampling(host):
    tdm, sdm = FakePatcher(host, "tdm", 0.0), FakePatcher(host, "sdm", 0.0)
    guider = host.sampling.SNFGuider(tdm, sdm, 5.0, (0.32, 0.62))
    guider.set_conds(cond(0.0), cond(1.0), cond(2.0))
    host.calls.clear()
    latent = torch.zeros(1, 4, 8, 8)
    latent[0, 0, 0, 0] = float("nan")
    with pytest.raises(host.errors.InputError, match="input latent contains NaN"):
        guider.sample(latent, latent, None, torch.linspace(10, 0, 3))
    assert host.calls == [] and sdm.pre_runs == 0  # refused before any model work


def test_sizes_that_cannot_fit_are_refused_with_the_largest_that_fits(host):
    tdm, sdm = FakePatcher(host, "tdm", 0.0), FakePatcher(host, "sdm", 0.0)
    guider = host.sampling.SNFGuider(tdm, sdm, 5.0, (0.32, 0.62))
    guider.set_conds(cond(0.0), cond(1.0), cond(2.0))
    huge = torch.zeros(1, 4, 1024, 1024)  # 8192x8192: 307 GiB by ComfyUI's estimate
    with pytest.raises(host.errors.InputError) as err:
        guider.sample(huge, huge, None, torch.linspace(10, 0, 3))
    message = str(err.value)
    assert message.startswith("8192x8192 (batch 1) needs about 307.2 GiB for one model call")
    # 1 GiB fake device: 2 * h * w * 0.15 MiB <= 1 GiB gives 448x448 in steps of 64
    fit = message.split("use at most about ")[1].split(" ")[0]
    w, h = (int(v) for v in fit.split("x"))
    assert w == h and w % 64 == 0
    area = 2 * (w // 8) * (h // 8) * 0.15 * 1024**2
    assert area <= 1024**3 < 2 * ((w + 64) // 8) * ((h + 64) // 8) * 0.15 * 1024**2
    assert sdm.pre_runs == 0


def test_region_mask_limits_where_the_sdm_may_win(host):
    tdm, sdm = FakePatcher(host, "tdm", 0.0), FakePatcher(host, "sdm", 0.0)
    sdm.model.pattern = torch.linspace(0, 1, 64).reshape(8, 8)
    sigmas = torch.linspace(10, 0, 5)

    def run(region):
        guider = host.sampling.SNFGuider(tdm, sdm, 5.0, (0.0, 1.0), region=region)
        guider.set_conds(cond(0.0), cond(1.0), cond(2.0))
        return _final_denoised(host, guider, sigmas), guider.last_records

    free, free_records = run(None)
    assert all(r.sdm_mask.any() for r in free_records)
    full, _ = run(torch.ones(1, 64, 64))  # image-space MASK, 8x the latent grid
    assert all(torch.equal(a, b) for a, b in zip(free, full, strict=True))
    none, none_records = run(torch.zeros(1, 64, 64))
    tdm_guided = torch.full((1, 4, 8, 8), 5.0)  # 0 + 5 (1 - 0): the TDM's own prediction
    assert all(torch.equal(out, tdm_guided) for out in none)
    assert all(not r.sdm_mask.any() for r in none_records)  # the sheet shows the constraint
    half = torch.zeros(1, 64, 64)
    half[:, :, :32] = 1.0  # people only on the left
    left, left_records = run(half)
    # the edge is averaged onto the latent grid (a soft blend there); the right stays TDM
    assert all(not r.sdm_mask[..., 5:].any() for r in left_records)
    with pytest.raises(host.errors.InputError, match="region mask"):
        run(torch.ones(3, 64, 64))  # 3 masks for a batch of 1


def _required(node_cls) -> list[str]:
    return [i.id for i in node_cls.define_schema().inputs if not i.optional]


def test_every_node_refuses_inputs_it_does_not_have(host):
    """ComfyUI passes unknown linked inputs to execute: refuse them at validation."""
    mappings = host.nodes
    assert mappings
    for node_id, node_cls in mappings.items():
        message = node_cls.validate_inputs(person_5=None)
        assert isinstance(message, str), node_id
        assert "has no input 'person_5'" in message, message
        for name in _required(node_cls):
            assert name in message, (node_id, name)
    message = mappings["FaceDiffuserSubjectEncode"].validate_inputs(
        clip=None,
        subject_encoder=None,
        prompt="a man <|image|>",
        people={"person_1": None},
        person_5=None,
    )
    assert "'Face-diffuser Subject Encode' has no input 'person_5'" in message
    assert "people (person_1 ... person_4)" in message and "object_resolution" in message


def test_people_list_and_old_person_names_are_both_accepted(host):
    encode = host.nodes["FaceDiffuserSubjectEncode"]
    base = {"clip": None, "subject_encoder": None, "prompt": "a man <|image|>"}
    assert encode.validate_inputs(**base, people={"person_1": None, "person_2": None}) is True
    assert encode.validate_inputs(**base, person_1=None, person_2=None) is True  # old graphs
    assert "no person is connected" in encode.validate_inputs(**base)  # HTTP 400, not later
    (people,) = [i for i in encode.define_schema().inputs if i.id == "people"]
    assert people.template.names == ["person_1", "person_2", "person_3", "person_4"]
    by_position = importlib.import_module(f"{PACK}.nodes.people_input").people_by_position
    a, b = torch.zeros(1, 4, 4, 3), torch.ones(1, 4, 4, 3)
    assert by_position({"people": {"person_1": a, "person_2": b}}) == [a, b, None, None]
    assert by_position({"person_1": a, "person_3": b}) == [a, None, b, None]
    assert by_position({"people": {"person_2": b}, "person_1": a})[:2] == [a, b]
    with pytest.raises(host.errors.InputError, match="person_1 is connected twice"):
        by_position({"people": {"person_1": a}, "person_1": b})
    with pytest.raises(host.errors.InputError, match="no person is connected"):
        by_position({"people": {}})


def test_settings_show_temperature_only_for_soft(host):
    settings = host.nodes["FaceDiffuserSNFSettings"]
    (mode,) = [i for i in settings.define_schema().inputs if i.id == "mode"]
    assert {o.key: [i.id for i in o.inputs] for o in mode.options} == {
        "hard": [],
        "soft": ["temperature"],
    }
    (fusion,) = settings.execute(mode={"mode": "soft", "temperature": 0.5}, kernel_size=3).args
    assert (fusion.mode, fusion.temperature, fusion.kernel_size) == ("soft", 0.5, 3)
    (fusion,) = settings.execute(mode={"mode": "hard"}, kernel_size=4).args
    assert fusion.mode == "hard"
    assert "choices" in settings.validate_inputs(mode={"mode": "no such mode"}, kernel_size=4)
    low = settings.validate_inputs(mode={"mode": "soft", "temperature": 0.0}, kernel_size=4)
    assert "temperature: value 0.0 is smaller than the minimum 0.01" in low
    sampler = host.nodes["FaceDiffuserKSampler"].define_schema()
    assert "FastComposer" in sampler.search_aliases
    advanced = {i.id for i in sampler.inputs if getattr(i, "advanced", None)}
    assert {"scene_end", "fusion_end"} <= advanced
    assert sampler.hidden == ["PROMPT", "UNIQUE_ID"]  # unread inspection outputs: not rendered


def test_a_host_without_dynamic_inputs_gets_fixed_sockets(old_host):
    encode = old_host.nodes["FaceDiffuserSubjectEncode"]
    ids = [i.id for i in encode.define_schema().inputs]
    assert ids[3:] == ["person_1", "person_2", "person_3", "person_4", "object_resolution"]
    assert encode.define_schema().search_aliases is None  # not passed: 0.3.48 lacks them
    base = {"clip": None, "subject_encoder": None, "prompt": "a man <|image|>"}
    assert encode.validate_inputs(**base, person_1=None) is True
    assert encode.validate_inputs(**base, **{"people.person_1": None}) is True  # 0.8.0 graphs
    assert "has no input 'people.person_5'" in encode.validate_inputs(
        **base, **{"people.person_5": None}
    )
    settings = old_host.nodes["FaceDiffuserSNFSettings"]
    assert [i.id for i in settings.define_schema().inputs] == ["mode", "kernel_size", "temperature"]
    (fusion,) = settings.execute(mode="soft", temperature=2.0, kernel_size=4).args
    assert (fusion.mode, fusion.temperature) == ("soft", 2.0)
    (fusion,) = settings.execute(mode="hard", kernel_size=4).args  # a 0.8.0 graph: no temperature
    assert fusion.mode == "hard"
    assert "is not one of the choices" in settings.validate_inputs(mode="x", kernel_size=4)


def test_range_and_choice_checks_still_apply(host):
    """With **kwargs ComfyUI leaves min/max and list checks to the node: they must still hold."""
    encode = host.nodes["FaceDiffuserSubjectEncode"]
    good = {"clip": None, "subject_encoder": None, "prompt": "a man <|image|>", "person_1": None}
    assert encode.validate_inputs(**good, object_resolution=512) is True
    assert "smaller than the minimum 224" in encode.validate_inputs(**good, object_resolution=100)


@pytest.fixture()
def folders(host, tmp_path, monkeypatch):
    """A fake folder_paths over tmp_path/ComfyUI, plus an extra_model_paths-style folder."""
    base = tmp_path / "ComfyUI"
    models = base / "models"
    registered: dict = {}

    def add_model_folder_path(name, path, is_default=False):
        registered.setdefault(name, ([], set()))[0].append(str(path))

    fake = _module(
        "folder_paths",
        base_path=str(base),
        models_dir=str(models),
        folder_names_and_paths=registered,
        supported_pt_extensions={".bin", ".safetensors"},
        add_model_folder_path=add_model_folder_path,
        get_folder_paths=lambda name: list(registered[name][0]),
    )
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    paths = importlib.import_module(f"{PACK}.nodes.paths")
    paths.register_folder()
    extra = tmp_path / "shared-disk" / "facediffuser"
    add_model_folder_path("facediffuser", extra)
    return types.SimpleNamespace(paths=paths, base=base, models=models, extra=extra)


def test_loader_names_resolve_only_inside_the_registered_folders(folders):
    paths = folders.paths
    sdm = folders.models / "facediffuser" / "SDM" / "pytorch_model.bin"
    sdm.parent.mkdir(parents=True)
    sdm.write_bytes(b"x")
    (folders.extra / "TDM").mkdir(parents=True)
    (folders.extra / "TDM" / "pytorch_model.bin").write_bytes(b"x")
    assert paths.model_list() == ["SDM/pytorch_model.bin", "TDM/pytorch_model.bin"]
    assert paths.resolve("TDM/pytorch_model.bin") == folders.extra / "TDM" / "pytorch_model.bin"
    with pytest.raises(Exception, match="only files and converted sets inside") as info:
        paths.resolve("../../../etc/hostname")
    message = str(info.value)
    assert "models/facediffuser (or its extra_model_paths.yaml folders:" in message
    assert str(folders.base) not in message


def test_error_text_names_no_server_paths(folders, host):
    paths = folders.paths
    inside = folders.models / "facediffuser" / "SDM" / "pytorch_model.bin"
    assert paths.redact(f"cannot read {inside}: truncated") == (
        "cannot read models/facediffuser/SDM/pytorch_model.bin: truncated"
    )
    custom = folders.base / "custom_nodes" / "pack" / "x.py"
    assert paths.redact(f"in {custom}") == "in custom_nodes/pack/x.py"
    extra = paths.redact(f"at {folders.extra / 'a.bin'}")
    assert extra == "at extra_model_paths.yaml's facediffuser folder #2/a.bin"

    guard = importlib.import_module(f"{PACK}.nodes.guard")

    io = sys.modules["comfy_api.latest"].io

    class Node(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="TestNode", display_name="Test node", inputs=[])

        @classmethod
        def validate_inputs(cls):
            raise host.errors.CheckpointError(f"{inside} is unreadable")

        @classmethod
        def execute(cls):
            raise host.errors.CheckpointError(f"{inside} is truncated")

    guard.guard(Node)
    assert Node.validate_inputs() == (
        "CheckpointError: models/facediffuser/SDM/pytorch_model.bin is unreadable"
    )
    with pytest.raises(host.errors.CheckpointError) as info:
        Node.execute()
    assert str(info.value) == "models/facediffuser/SDM/pytorch_model.bin is truncated"


# --------------------------------------------------------------------------- provenance


def _tagged(host, value, role, sdm="SDM/a.bin"):
    prov = importlib.import_module(f"{PACK}.nodes.provenance")
    return prov.tag(cond(value), role, sdm)


def test_guider_refuses_roles_in_the_wrong_socket(host):
    InputError = host.errors.InputError
    guider = host.sampling.SNFGuider(
        FakePatcher(host, "tdm", 0.0), FakePatcher(host, "sdm", 1.0), 5.0, (0.32, 0.62)
    )
    text, subject = _tagged(host, 1.0, "text"), _tagged(host, 2.0, "subject")
    guider.set_conds(cond(0.0), text, subject)  # the right wiring
    guider.set_conds(cond(0.0), text, subject, cond(3.0))  # a stock tdm_text
    cases = [
        ((cond(0.0), subject, text, None), "'text' and 'subject' are swapped"),
        ((cond(0.0), text, subject, subject), "'tdm_text' carries Subject Encode's 'subject'"),
        ((subject, text, subject, None), "'negative' carries Subject Encode's 'subject'"),
        ((text, text, subject, None), "'negative' carries Subject Encode's 'text'"),
        ((cond(0.0), text, text, None), "'subject' carries Subject Encode's 'text'"),
        ((cond(0.0), subject, subject, None), "'text' carries Subject Encode's 'subject'"),
        (
            (cond(0.0), text, _tagged(host, 2.0, "subject", "SDM/b.bin"), None),
            "encoded for the SDM SDM/a.bin but 'subject' for the SDM SDM/b.bin",
        ),
    ]
    for args, message in cases:
        with pytest.raises(InputError, match=message):
            guider.set_conds(*args)


def test_stock_conditioning_nodes_keep_defined_roles(host):
    prov = importlib.import_module(f"{PACK}.nodes.provenance")
    text, subject = _tagged(host, 1.0, "text"), _tagged(host, 2.0, "subject")
    zeroed = [[torch.zeros_like(t), dict(d)] for t, d in text]  # Conditioning Zero Out
    area = [[t, {**d, "area": (8, 8, 0, 0)}] for t, d in subject]  # Set Area
    combined = subject + cond(5.0)  # Combine with a stock encoding
    concat = [[torch.cat([t, cond(5.0)[0][0]], 1), dict(d)] for t, d in text]  # Concat
    assert prov.roles(zeroed) == set() and prov.roles(area) == {"subject"}
    assert prov.roles(combined) == {"subject"} and prov.roles(concat) == {"text"}
    prov.check_wiring(zeroed, concat, combined)  # a zeroed text is a fine negative
    with pytest.raises(host.errors.InputError, match="'text' carries"):
        prov.check_wiring(cond(0.0), text + subject, area)


def test_subject_encoder_and_clip_must_share_their_sdm(host, caplog):
    prov = importlib.import_module(f"{PACK}.nodes.provenance")
    ModelError = host.errors.ModelError

    def clip(kind=None, name=None):
        out = types.SimpleNamespace(cond_stage_model=types.SimpleNamespace())
        if kind:
            prov.mark_clip(out, kind, name)
        return out

    encoder = types.SimpleNamespace()
    prov.mark(encoder, "sdm", "SDM/a.bin")
    assert prov.encoder_source(clip("sdm", "SDM/a.bin"), encoder) == "SDM/a.bin"
    with pytest.raises(ModelError, match="clip comes from the SDM SDM/b.bin but its subject_enc"):
        prov.encoder_source(clip("sdm", "SDM/b.bin"), encoder)
    with pytest.raises(ModelError, match="comes from 'Load Face-diffuser TDM'"):
        prov.encoder_source(clip("tdm", "TDM/x.bin"), encoder)
    with caplog.at_level(logging.WARNING):
        assert prov.encoder_source(clip(), encoder) == "SDM/a.bin"  # unmarked: traced no further
    assert "no Face-diffuser loader made" in caplog.text
    model = FakePatcher(host, "sdm", 1.0)
    prov.mark_model(model, "sdm", "SDM/b.bin")
    with pytest.raises(host.errors.InputError, match="but the SDM model is SDM/b.bin"):
        prov.check_wiring(
            cond(0.0), _tagged(host, 1.0, "text"), _tagged(host, 2.0, "subject"), sdm=model
        )


# --------------------------------------------------------------------------- the queue's view


def _host_stubs(tmp_path) -> dict[str, types.ModuleType]:
    """Host modules the loader and face nodes import; their schemas call only folder_paths."""
    registered: dict = {}

    def add_model_folder_path(name, path, is_default=False):
        registered.setdefault(name, ([], set()))[0].append(str(path))

    stubs = {
        name: _module(name)
        for name in (
            "comfy.sd",
            "comfy.sd1_clip",
            "comfy.supported_models",
            "comfy.model_detection",
            "comfy.clip_model",
            "comfy.ops",
        )
    }
    stubs["folder_paths"] = _module(
        "folder_paths",
        base_path=str(tmp_path),
        models_dir=str(tmp_path / "models"),
        folder_names_and_paths=registered,
        supported_pt_extensions={".bin", ".safetensors"},
        add_model_folder_path=add_model_folder_path,
        get_folder_paths=lambda name: list(registered.get(name, ([], set()))[0]),
    )
    return stubs


@pytest.fixture()
def all_nodes(monkeypatch, caplog, tmp_path):
    """Every node of the pack, loaded on the fake host (loaders and face nodes too)."""
    yield _load_pack(monkeypatch, caplog, extra=_host_stubs(tmp_path)).nodes
    for key in [k for k in sys.modules if k.startswith(PACK)]:
        del sys.modules[key]


def _schema_inputs(node) -> dict[str, tuple]:
    """input name -> (min, max) as the node's V3 schema declares it (a list's slots too)."""
    inputs = {}
    for spec in node.define_schema().inputs:
        inputs[spec.id] = (spec.min, spec.max)
        for slot in getattr(getattr(spec, "template", None), "names", None) or ():
            inputs[slot] = (None, None)
    return inputs


def _recorded_inputs(info: dict) -> dict[str, tuple]:
    """The same from a recorded /object_info entry (tests/fixtures/comfyui)."""
    inputs = {}
    for section in ("required", "optional"):
        for name, spec in ((info.get("input") or {}).get(section) or {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            inputs[name] = (options.get("min"), options.get("max"))
            for slot in (options.get("template") or {}).get("names") or ():
                inputs[slot] = (None, None)
    return inputs


def _queue_mismatches(defined: dict[str, dict[str, tuple]]) -> list[str]:
    """What the queue relies on that the node definitions ``defined`` lack or range otherwise.

    The queue's side is read from the queue (the ``facediffuser_core`` on sys.path); the
    definitions come from the nodes, so the two are independent views.
    """
    from facediffuser_core.apiqueue.limits import pack_limits
    from facediffuser_core.apiqueue.settings import pack_inputs

    problems = []
    for node_id, names in sorted(pack_inputs().items()):
        if node_id not in defined:
            problems.append(f"the queue uses node {node_id}, which the pack does not define")
            continue
        problems += [
            f"the queue writes {node_id}.{name}, which the node does not have"
            for name in sorted(names - set(defined[node_id]))
        ]
    for limit in pack_limits():  # the ranges the queue applies when no server gives one
        declared = defined.get(limit.node_id, {}).get(limit.input)
        if declared is not None and declared != (limit.low, limit.high):
            problems.append(f"{limit.setting}: queue {limit.describe()}, node {declared}")
    return problems


def test_the_queue_sees_the_nodes_as_they_are_defined(all_nodes):
    """Every node and input the queue relies on exists as the nodes define it, with the
    range the queue checks offline: a renamed input breaks this test, not a user's batch."""
    from facediffuser_core.apiqueue.limits import pack_limits
    from facediffuser_core.node_names import NODE_IDS

    assert sorted(all_nodes) == sorted(NODE_IDS)
    defined = {node_id: _schema_inputs(node) for node_id, node in all_nodes.items()}
    assert _queue_mismatches(defined) == []
    assert {limit.setting for limit in pack_limits()} == {
        "seed",
        "steps",
        "cfg",
        "scene_end",
        "fusion_end",
    }


def test_the_recorded_object_info_matches_the_queue():
    """The fixtures the queue's tests replay were recorded from the nodes as they are."""
    for name in ("object_info.json", "object_info_pack.json"):
        recorded = json.loads((ROOT / "tests/fixtures/comfyui" / name).read_text())
        defined = {node_id: _recorded_inputs(info) for node_id, info in recorded.items()}
        assert _queue_mismatches(defined) == [], f"record {name} again (tests/fixtures/comfyui)"


def test_a_queue_range_other_than_the_nodes_is_caught(all_nodes, monkeypatch):
    """The queue once allowed cfg up to 100 while the node stopped at 30."""
    from facediffuser_core import ranges

    monkeypatch.setitem(ranges.NUMBERS["cfg"], "max", 100.0)  # the queue's copy only
    defined = {node_id: _schema_inputs(node) for node_id, node in all_nodes.items()}
    assert _queue_mismatches(defined) == ["cfg: queue 0 to 100, node (0.0, 30.0)"]


@pytest.mark.parametrize(
    "line, renamed, problem",
    [
        ('SEED = "seed"', 'SEED = "noise_seed"', "FaceDiffuserKSampler.seed, which the node"),
        ('PERSON = "person"', 'PERSON = "face"', "FaceDiffuserSubjectEncode.person_1, which"),
        (
            'KSAMPLER = "FaceDiffuserKSampler"',
            'KSAMPLER = "FaceDiffuserSampler"',
            "node FaceDiffuserKSampler, which the pack does not define",
        ),
    ],
)
def test_the_tie_reads_the_nodes_schemas_not_the_contract_twice(
    monkeypatch, caplog, tmp_path, line, renamed, problem
):
    """Nodes built from a renamed contract (as on a server with another version) while the
    queue keeps the old name: the tie check must report it."""
    source = (ROOT / "facediffuser_core" / "node_names.py").read_text()
    assert line in source
    try:
        nodes = _load_pack(
            monkeypatch, caplog, extra=_host_stubs(tmp_path), contract=source.replace(line, renamed)
        ).nodes
        defined = {node_id: _schema_inputs(node) for node_id, node in nodes.items()}
    finally:
        for key in [k for k in sys.modules if k.startswith(PACK)]:
            del sys.modules[key]
    assert any(problem in p for p in _queue_mismatches(defined)), _queue_mismatches(defined)
