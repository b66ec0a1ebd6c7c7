"""Safe reading of the published weights and the safetensors converter."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from facediffuser_core.errors import CheckpointError
from facediffuser_core.weights import checkpoints as ck
from facediffuser_core.weights.configs import unet_config_from_diffusers
from facediffuser_core.weights.conversion import convert
from facediffuser_core.weights.ldm import unet_to_ldm
from facediffuser_core.weights.reading import read_state_dict


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from facediffuser_core.tiny.diffusion import write_tiny_set

    return write_tiny_set(tmp_path_factory.mktemp("tiny_ck"))


@pytest.fixture(scope="module")
def published(tiny_set):
    return {
        kind: torch.load(path, weights_only=True)
        for kind, path in (("sdm", tiny_set.sdm_bin), ("tdm", tiny_set.tdm_bin))
    }


class _MakesMarker:
    """Unpickling this would create a directory: proof of code execution."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _some_function():  # pragma: no cover - only pickled by reference
    return 1


# --------------------------------------------------------------------------- read_state_dict


def test_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.bin"
    torch.save({"w": torch.ones(3), "payload": _MakesMarker(str(marker))}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects") as info:
        read_state_dict(path)
    assert "mkdir" in str(info.value)
    assert not marker.exists()
    # positive control: an unrestricted unpickler really would have run the payload
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "payload",
    [_some_function, pickle.dumps, ValueError("x")],
    ids=["function", "builtin", "exception-instance"],
)
def test_other_pickled_objects_are_refused(tmp_path, payload):
    path = tmp_path / "obj.bin"
    torch.save({"w": torch.ones(1), "obj": payload}, path)
    with pytest.raises(CheckpointError, match="refused without running them"):
        read_state_dict(path)


def _plain_bin(path):
    torch.save({"w": torch.arange(4000, dtype=torch.float32)}, path)
    return path


def test_truncated_and_garbage_bin(tmp_path):
    data = _plain_bin(tmp_path / "ok.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(os.urandom(2000))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    for name in ("cut.bin", "junk.pt", "empty.ckpt"):
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            read_state_dict(tmp_path / name)
    assert torch.equal(read_state_dict(tmp_path / "ok.bin")["w"], torch.arange(4000.0))


def test_truncated_and_garbage_safetensors(tmp_path):
    save_file({"w": torch.ones(4000)}, str(tmp_path / "ok.safetensors"))
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(os.urandom(2000))
    (tmp_path / "header_only.safetensors").write_bytes(data[:20])
    for name in ("cut", "junk", "header_only"):
        with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
            read_state_dict(tmp_path / f"{name}.safetensors")
    assert torch.equal(read_state_dict(tmp_path / "ok.safetensors")["w"], torch.ones(4000))


def test_legacy_torch_format_wrappers_and_non_tensors(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save(
        {"state_dict": {"a": torch.ones(2)}, "epoch": 3},
        legacy,
        _use_new_zipfile_serialization=False,
    )
    assert list(read_state_dict(legacy)) == ["a"]
    torch.save({"a": torch.ones(2), "step": 7}, tmp_path / "mixed.bin")
    with pytest.raises(CheckpointError, match="not tensors.*step"):
        read_state_dict(tmp_path / "mixed.bin")
    torch.save([torch.ones(2)], tmp_path / "list.bin")
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(tmp_path / "list.bin")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.bin")


# --------------------------------------------------------------------------- parts


def test_split_published_lists_foreign_keys():
    sd = {
        "unet.conv_in.weight": torch.ones(1),
        "optimizer.state": torch.ones(1),
        "vae.x": torch.ones(1),
    }
    with pytest.raises(CheckpointError, match=r"1 keys outside.*optimizer\.state"):
        ck.split_published(sd)
    many = {f"ema.{i}": torch.ones(1) for i in range(15)}
    with pytest.raises(CheckpointError, match=r"ema\.0.*and 5 more"):
        ck.split_published(many)
    parts = ck.split_published({"unet.a": torch.ones(1), "postfuse_module.b": torch.ones(1)})
    assert parts == {"unet": {"a": parts["unet"]["a"]}, "postfuse": {"b": parts["postfuse"]["b"]}}


def test_published_parts_and_kinds(tiny_set, published):
    sdm = ck.load_parts(tiny_set.sdm_bin)
    tdm = ck.load_parts(tiny_set.tdm_bin.parent)  # the folder works too
    assert sdm.kind == "sdm" and tdm.kind == "tdm"
    assert set(sdm.parts) == {"unet", "vae", "text_encoder", "image_encoder", "postfuse"}
    assert set(tdm.parts) == {"unet", "vae", "text_encoder"}
    # canonical layouts: prefixes stripped, position_ids buffers dropped
    raw = published["sdm"]
    assert torch.equal(sdm.parts["unet"]["conv_in.weight"], raw["unet.conv_in.weight"])
    assert "embeddings.position_ids" not in sdm.parts["text_encoder"]
    assert "vision_model.embeddings.position_ids" not in sdm.parts["image_encoder"]
    assert "visual_projection.weight" in sdm.parts["image_encoder"]
    assert "mlp1.fc1.weight" in sdm.parts["postfuse"]


def test_check_keys_reports_missing_and_unexpected_by_name(published):
    from facediffuser_core.subject.postfuse import PostfuseModule

    post = {
        k[len("postfuse_module.") :]: v
        for k, v in published["sdm"].items()
        if k.startswith("postfuse_module.")
    }
    module = PostfuseModule(64)
    assert ck.check_keys("postfuse", post, module).ok
    del post["mlp2.fc1.bias"]
    post["extra.weight"] = torch.ones(1)
    report = ck.check_keys("postfuse", post, module)
    assert report.missing == ["mlp2.fc1.bias"] and report.unexpected == ["extra.weight"]
    with pytest.raises(CheckpointError, match=r"missing: mlp2\.fc1\.bias.*unexpected: extra"):
        report.raise_for_problems()
    assert ck.check_keys("x", {"a": 1}, ["a", "b"]).missing == ["b"]


def test_incomplete_checkpoints_are_refused(tmp_path, published):
    no_vae = {k: v for k, v in published["tdm"].items() if not k.startswith("vae.")}
    torch.save(no_vae, tmp_path / "novae.bin")
    with pytest.raises(CheckpointError, match="no vae weights"):
        ck.load_parts(tmp_path / "novae.bin")
    half_sdm = {k: v for k, v in published["sdm"].items() if not k.startswith("postfuse_module.")}
    torch.save(half_sdm, tmp_path / "half.bin")
    with pytest.raises(CheckpointError, match="image_encoder weights but no postfuse"):
        ck.load_parts(tmp_path / "half.bin")
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.load_parts(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="neither a converted set"):
        ck.load_parts(empty)


def test_canonicalize_accepts_older_layouts():
    text = ck.canonicalize_part(
        "text_encoder",
        {
            "text_model.embeddings.token_embedding.weight": torch.ones(2),
            "text_model.embeddings.position_ids": torch.arange(3)[None],
        },
    )
    assert list(text) == ["embeddings.token_embedding.weight"]
    vae = ck.canonicalize_part(
        "vae",
        {
            "encoder.mid_block.attentions.0.query.weight": torch.ones(4, 4, 1, 1),
            "encoder.mid_block.attentions.0.proj_attn.bias": torch.ones(4),
            "decoder.mid_block.attentions.0.group_norm.weight": torch.ones(4),
            "encoder.down_blocks.0.resnets.0.conv1.weight": torch.ones(4, 4, 1, 1),
        },
    )
    assert vae["encoder.mid_block.attentions.0.to_q.weight"].shape == (4, 4)
    assert "encoder.mid_block.attentions.0.to_out.0.bias" in vae
    assert "decoder.mid_block.attentions.0.group_norm.weight" in vae
    assert vae["encoder.down_blocks.0.resnets.0.conv1.weight"].shape == (4, 4, 1, 1)


# --------------------------------------------------------------------------- convert


def test_converted_set_layout_and_metadata(tiny_set):
    files = {p.name for p in tiny_set.sdm_converted.iterdir()}
    assert files == {
        "unet.safetensors",
        "vae.safetensors",
        "text_encoder.safetensors",
        "image_encoder.safetensors",
        "postfuse.safetensors",
    }
    assert {p.name for p in tiny_set.tdm_converted.iterdir()} == {
        "unet.safetensors",
        "vae.safetensors",
        "text_encoder.safetensors",
    }
    for path in tiny_set.sdm_converted.iterdir():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            keys = list(f.keys())
        assert meta == {
            "facediffuser_part": path.name.removesuffix(".safetensors"),
            "facediffuser_kind": "sdm",
            "facediffuser_format": "1",
        }
        if path.name == "text_encoder.safetensors":
            assert all(k.startswith("text_model.") for k in keys)
        if path.name == "unet.safetensors":
            assert "input_blocks.0.0.weight" in keys and "out.2.weight" in keys
            assert not any(k.startswith(("down_blocks", "up_blocks", "mid_block")) for k in keys)
        if path.name == "image_encoder.safetensors":
            assert "visual_projection.weight" in keys
            assert all(k.startswith(("vision_model.", "visual_projection.")) for k in keys)
        if path.name == "postfuse.safetensors":
            assert "layer_norm.weight" in keys


def test_converted_set_loads_back_identically(tiny_set):
    for bin_path, folder in (
        (tiny_set.sdm_bin, tiny_set.sdm_converted),
        (tiny_set.tdm_bin, tiny_set.tdm_converted),
    ):
        a, b = ck.load_parts(bin_path), ck.load_parts(folder)
        assert a.kind == b.kind
        assert set(a.parts) == set(b.parts)
        for part in a.parts:
            assert set(a.parts[part]) == set(b.parts[part]), part
            for k, t in a.parts[part].items():
                assert t.dtype == b.parts[part][k].dtype
                assert torch.equal(t, b.parts[part][k]), (part, k)


def test_unet_file_is_the_ldm_renaming(tiny_set):
    parts = ck.load_parts(tiny_set.sdm_bin).parts
    expected = unet_to_ldm(parts["unet"], unet_config_from_diffusers(parts["unet"]))
    got = load_file(str(tiny_set.sdm_converted / "unet.safetensors"))
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_dtype_casts_floating_tensors_only(tmp_path, published):
    sd = dict(published["tdm"])
    sd["vae.some_counter"] = torch.tensor([3, 4], dtype=torch.int64)
    torch.save(sd, tmp_path / "with_int.bin")
    out = convert(tmp_path / "with_int.bin", tmp_path / "half", dtype=torch.float16, progress=False)
    vae = load_file(str(out["vae"]))
    assert vae["some_counter"].dtype == torch.int64
    assert torch.equal(vae["some_counter"], torch.tensor([3, 4]))
    for path in out.values():
        for k, t in load_file(str(path)).items():
            if k != "some_counter":
                assert t.dtype == torch.float16, k
    w = load_file(str(out["unet"]))["input_blocks.0.0.weight"]
    assert torch.equal(w, sd["unet.conv_in.weight"].half())


def test_convert_is_atomic_overwrites_and_drops_stale_sdm_parts(tmp_path, tiny_set):
    out = tmp_path / "set"
    first = convert(tiny_set.sdm_bin, out, progress=False)
    assert set(first) == {"unet", "vae", "text_encoder", "image_encoder", "postfuse"}
    assert ck.load_parts(out).kind == "sdm"
    # converting the TDM into the same folder replaces the files and removes the SDM-only ones
    with pytest.raises(CheckpointError, match="already holds a converted set"):
        convert(tiny_set.tdm_bin, out, progress=False)  # not without replace=True
    second = convert(tiny_set.tdm_bin, out, progress=False, replace=True)
    assert set(second) == {"unet", "vae", "text_encoder"}
    assert sorted(p.name for p in out.iterdir()) == [
        "text_encoder.safetensors",
        "unet.safetensors",
        "vae.safetensors",
    ]
    loaded = ck.load_parts(out)
    assert loaded.kind == "tdm"
    tdm = ck.load_parts(tiny_set.tdm_bin)
    assert torch.equal(loaded.parts["unet"]["conv_in.weight"], tdm.parts["unet"]["conv_in.weight"])


def test_a_failed_write_leaves_the_old_file(tmp_path, tiny_set, monkeypatch):
    out = tmp_path / "set"
    convert(tiny_set.tdm_bin, out, progress=False)
    before = (out / "unet.safetensors").read_bytes()

    # the disk fills up while the unet file is half written (files are written tensor by tensor)
    original, calls = ck.CheckpointParts.fresh, []

    def fresh(self, tensor, *args, **kwargs):
        calls.append(tensor)
        if len(calls) > 5:
            raise OSError("disk full")
        return original(self, tensor, *args, **kwargs)

    monkeypatch.setattr(ck.CheckpointParts, "fresh", fresh)
    with pytest.raises(OSError, match="disk full"):
        convert(tiny_set.sdm_bin, out, progress=False, replace=True)
    assert (out / "unet.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [
        "text_encoder.safetensors",
        "unet.safetensors",
        "vae.safetensors",
    ]


def test_progress_can_be_shown_or_hidden(tmp_path, tiny_set, capsys):
    convert(tiny_set.tdm_bin, tmp_path / "quiet", progress=False)
    assert "converting" not in capsys.readouterr().err
    convert(tiny_set.tdm_bin, tmp_path / "loud", progress=True)
    assert "converting" in capsys.readouterr().err


def test_single_part_file_points_to_its_folder(tiny_set):
    with pytest.raises(CheckpointError, match="pass the folder"):
        ck.load_parts(tiny_set.sdm_converted / "unet.safetensors")


def test_published_layout_in_one_safetensors_file(tmp_path, published):
    save_file(
        {k: v.contiguous() for k, v in published["tdm"].items()}, str(tmp_path / "tdm.safetensors")
    )
    parts = ck.load_parts(tmp_path / "tdm.safetensors")
    assert parts.kind == "tdm"
    assert torch.equal(
        parts.parts["vae"]["decoder.conv_in.weight"], published["tdm"]["vae.decoder.conv_in.weight"]
    )


def test_convert_never_overwrites_a_file_it_did_not_write(tmp_path, tiny_set):
    from safetensors.torch import save_file as save

    out = tmp_path / "mine"
    out.mkdir()
    save({"w": torch.ones(3)}, str(out / "vae.safetensors"))  # the user's own file
    before = (out / "vae.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="not written by this converter"):
        convert(tiny_set.sdm_bin, out, progress=False)
    assert (out / "vae.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["vae.safetensors"], "nothing else written"
