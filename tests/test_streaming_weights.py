"""Weights written and read one tensor at a time: the files are the formats' own, reading a
tensor never goes through the file's mapping, and modules get their own copies."""

from __future__ import annotations

import zipfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from facediffuser_core.weights import checkpoints as ck
from facediffuser_core.weights.reading import read_mapped
from facediffuser_core.weights.writing import TensorSpec, write_safetensors, write_torch_file


def _state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 4, generator=g),
        "a.bias": torch.randn(4, generator=g).to(torch.bfloat16),
        "ids": torch.arange(77)[None],
        "scale": torch.tensor(2.5),
        "half": torch.randn(5, 2, generator=g).half(),
    }


def _specs(sd):
    return {k: TensorSpec.of(v) for k, v in sd.items()}


def test_torch_file_is_what_torch_save_writes(tmp_path):
    sd = _state_dict()
    torch.save(sd, tmp_path / "ref.bin")
    write_torch_file(tmp_path / "mine.bin", _specs(sd), sd.items())
    ref, mine = zipfile.ZipFile(tmp_path / "ref.bin"), zipfile.ZipFile(tmp_path / "mine.bin")
    assert mine.read("archive/data.pkl") == ref.read("ref/data.pkl")  # the same pickle bytes
    assert [i.filename.split("/", 1)[1] for i in mine.infolist()] == [
        i.filename.split("/", 1)[1] for i in ref.infolist()
    ]
    for mmap in (False, True):
        back = torch.load(tmp_path / "mine.bin", weights_only=True, mmap=mmap)
        assert list(back) == list(sd)
        assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in sd.items())


@pytest.mark.parametrize("problem", ["order", "missing", "shape", "extra"])
def test_torch_writer_refuses_what_it_did_not_announce_and_leaves_no_file(tmp_path, problem):
    sd = _state_dict()
    items = list(sd.items())
    if problem == "order":
        items = items[::-1]
    elif problem == "missing":
        items = items[:-1]
    elif problem == "shape":
        items[0] = ("a.weight", torch.zeros(4, 3))
    else:
        items.append(("other", torch.zeros(1)))
    with pytest.raises(ValueError):
        write_torch_file(tmp_path / "x.bin", _specs(sd), items)
    assert list(tmp_path.iterdir()) == []


def test_safetensors_file_reads_back_with_metadata_and_alignment(tmp_path):
    sd = _state_dict()
    asked = []

    def produce(key):
        asked.append(key)
        return sd[key]

    write_safetensors(tmp_path / "x.safetensors", _specs(sd), produce, {"part": "unet"})
    assert sorted(asked) == sorted(sd)  # each tensor made once, when written
    back = load_file(str(tmp_path / "x.safetensors"))
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in sd.items())
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        assert f.metadata() == {"part": "unet"}
    views, mapped = read_mapped(tmp_path / "x.safetensors")
    base = mapped.storage.data_ptr()  # the file's first byte
    for v in views.values():  # every tensor starts at a multiple of its element size
        assert (v.data_ptr() - base) % v.element_size() == 0


def test_a_failed_write_keeps_the_old_file(tmp_path):
    sd = _state_dict()
    target = tmp_path / "x.safetensors"
    write_safetensors(target, _specs(sd), sd.__getitem__)
    before = target.read_bytes()

    def produce(key):
        if key == "ids":
            raise OSError("disk full")
        return sd[key]

    with pytest.raises(OSError, match="disk full"):
        write_safetensors(target, _specs(sd), produce)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_mapped_tensors_are_read_fresh_in_any_dtype(tmp_path, suffix):
    sd = _state_dict()
    path = tmp_path / f"w{suffix}"
    if suffix == ".bin":
        torch.save(sd, path)
    else:
        write_safetensors(path, _specs(sd), sd.__getitem__)
    views, mapped = read_mapped(path)
    assert mapped is not None
    for key, value in sd.items():
        view = views[key]
        assert mapped.holds(view) and torch.equal(view, value)
        fresh = mapped.read(view)
        assert not mapped.holds(fresh) and torch.equal(fresh, value)
        cast = mapped.read(view, torch.float16)
        expected = value.half() if value.is_floating_point() else value
        assert cast.dtype == expected.dtype and torch.equal(cast, expected)
    transposed = views["a.weight"].t()  # a non-contiguous view reads as the same values
    assert torch.equal(mapped.read(transposed), sd["a.weight"].t())
    assert not mapped.holds(torch.zeros(3))


def test_a_torch_file_whose_records_are_not_where_the_pickle_says_is_still_read(tmp_path):
    sd = _state_dict()
    path = tmp_path / "odd.bin"
    writer = torch._C.PyTorchFileWriter(str(path))
    ref = tmp_path / "ref.bin"
    torch.save(sd, ref)
    archive = zipfile.ZipFile(ref)
    names = [i.filename.split("/", 1)[1] for i in archive.infolist()]
    head = [n for n in names if not n.startswith(("data/", "version", ".data/"))]
    data = sorted((n for n in names if n.startswith("data/")), reverse=True)  # out of order
    for name in head + data:
        blob = archive.read(f"ref/{name}")
        writer.write_record(name, blob, len(blob))
    writer.write_end_of_file()
    views, mapped = read_mapped(path)
    assert mapped is None  # torch's own mapping: correct values, no fresh reads from it
    assert all(torch.equal(views[k], v) for k, v in sd.items())


def test_load_in_chunks_keeps_chunks_small_and_reports_keys_like_load_state_dict(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    sd = {k: torch.randn_like(v) for k, v in module.state_dict().items()}
    torch.save({**sd, "stray": torch.zeros(2)}, tmp_path / "m.bin")
    views, mapped = read_mapped(tmp_path / "m.bin")
    parts = ck.CheckpointParts("tdm", {}, files=(mapped,))
    del views["0.bias"]
    seen = []

    def load(chunk):
        seen.append(sum(t.numel() * t.element_size() for t in chunk.values()))
        assert not any(mapped.holds(t) for t in chunk.values())
        return module.load_state_dict(chunk, strict=False)

    missing, unexpected = parts.load_in_chunks(load, views, chunk_bytes=10_000)
    assert len(seen) > 1 and max(seen) < 10_000 + 64 * 64 * 4
    assert missing == ["0.bias"] and unexpected == ["stray"]
    assert torch.equal(module[0].weight, sd["0.weight"])
    assert torch.equal(module[1].bias, sd["1.bias"])


def test_built_models_never_hold_the_file(tiny_set):
    from facediffuser_core.weights.models import build_models

    parts = ck.load_parts(tiny_set.sdm_bin)
    assert parts.files, "a published file is read mapped"
    (mapped,) = parts.files
    for dtype in (torch.float32, torch.float16):
        models = build_models(parts, dtype=dtype)
        modules = (models.unet, models.vae, models.text_encoder, models.subject_encoder)
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        assert tensors and not any(mapped.holds(t) for t in tensors)
        assert {t.dtype for t in tensors if t.is_floating_point()} == {dtype}
        want = parts.parts["unet"]["conv_in.weight"].to(dtype)
        assert torch.equal(models.unet.conv_in.weight, want)
