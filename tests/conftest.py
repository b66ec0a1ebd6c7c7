"""Shared fixtures: one tiny model set (real file formats) and a pipeline over it per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    from facediffuser_core.tiny.diffusion import write_tiny_set

    return write_tiny_set(tmp_path_factory.mktemp("tiny-set"), seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_set):
    from facediffuser_core.pipeline import FaceDiffuserPipeline
    from facediffuser_core.subject.text import load_tokenizer
    from facediffuser_core.weights.models import load_models

    sdm = load_models(tiny_set.sdm_bin)
    tdm = load_models(tiny_set.tdm_bin)
    return FaceDiffuserPipeline(sdm, tdm, load_tokenizer(tiny_set.tokenizer))


@pytest.fixture(scope="session")
def tiny_references(tiny_set):
    from facediffuser_core.images import load_image

    return [load_image(p) for p in tiny_set.references]
