"""Model listing and resolution for the model folder (no ComfyUI needed)."""

from __future__ import annotations

import pytest

from facediffuser_core.errors import CheckpointError
from facediffuser_core.weights.modelfiles import (
    find_tokenizer,
    model_entries,
    resolve_entry,
    scan_model_folder,
)


def test_converted_sets_collapse_to_their_folder():
    files = [
        "SDM/pytorch_model.bin",
        "TDM/pytorch_model.bin",
        "sdm-fp16/unet.safetensors",
        "sdm-fp16/vae.safetensors",
        "sdm-fp16/postfuse.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "loose/vae.safetensors",  # no unet.safetensors beside it: an ordinary file
        "notes.txt",
    ]
    assert model_entries(files) == [
        "SDM/pytorch_model.bin",
        "TDM/pytorch_model.bin",
        "loose/vae.safetensors",
        "sdm-fp16/",
    ]


def test_scan_and_resolve_on_the_tiny_set(tiny_set):
    entries = scan_model_folder(tiny_set.root)
    assert "SDM/pytorch_model.bin" in entries and "TDM/pytorch_model.bin" in entries
    assert "converted/sdm/" in entries and "converted/tdm/" in entries
    assert not any(e.endswith(".json") or e.endswith(".txt") for e in entries)
    assert resolve_entry([tiny_set.root], "converted/sdm/") == tiny_set.sdm_converted
    assert resolve_entry([tiny_set.root], "SDM/pytorch_model.bin") == tiny_set.sdm_bin
    assert find_tokenizer(tiny_set.sdm_bin) == tiny_set.tokenizer
    assert find_tokenizer(tiny_set.sdm_converted) is None  # converted/ is one level deeper


def test_missing_model_names_the_folder_and_the_download(tmp_path):
    with pytest.raises(CheckpointError, match="CodeGoat24/Face-diffuser") as info:
        resolve_entry([tmp_path], "SDM/pytorch_model.bin")
    assert str(tmp_path) in str(info.value)
    assert scan_model_folder(tmp_path / "absent") == []


def _weights(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really weights")
    return path


def test_only_listed_entries_resolve_and_symlinked_folders_are_listed(tmp_path):
    root = tmp_path / "models" / "facediffuser"
    _weights(root / "SDM" / "pytorch_model.bin")
    elsewhere = _weights(tmp_path / "big-disk" / "TDM" / "pytorch_model.bin").parent
    (root / "TDM").symlink_to(elsewhere, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # must not recurse forever
    assert "TDM/pytorch_model.bin" in scan_model_folder(root)
    assert resolve_entry([root], "TDM/pytorch_model.bin") == root / "TDM" / "pytorch_model.bin"
    outside = _weights(tmp_path / "secret.safetensors")
    for name in (
        "../secret.safetensors",
        "SDM/../../secret.safetensors",
        str(outside),
        "SDM\\pytorch_model.bin",
        "SDM/",  # a folder that is not a converted set
        "SDM/./pytorch_model.bin",
        "",
        None,
    ):
        with pytest.raises(CheckpointError, match="only files and converted sets inside"):
            resolve_entry([root], name, where="models/facediffuser")


def test_refusal_neither_touches_nor_reveals_files_outside(tmp_path, monkeypatch):
    """Membership, not path joining: an outside file that exists reads like one that does not."""
    import os

    root = tmp_path / "models" / "facediffuser"
    _weights(root / "SDM" / "pytorch_model.bin")
    _weights(tmp_path / "exists.safetensors")
    touched: list[str] = []
    real_stat = os.stat

    def recording_stat(path, *args, **kwargs):
        touched.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", recording_stat)
    messages = {}
    for name in ("../../exists.safetensors", "../../absent.safetensors"):
        with pytest.raises(CheckpointError) as info:
            resolve_entry([root], name, where="models/facediffuser")
        messages[name] = str(info.value).replace(name, "<name>")
    assert len(set(messages.values())) == 1, messages
    assert "'..', absolute paths and backslashes are refused" in messages[name]
    assert "models/facediffuser" in messages[name] and str(tmp_path) not in messages[name]
    assert not [p for p in touched if "exists" in p or "absent" in p], touched
