"""Model listing and resolution for the model folder (no ComfyUI needed)."""

from __future__ import annotations

import pytest

from facediffuser_core.errors import CheckpointError
from facediffuser_core.modelfiles import (
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
