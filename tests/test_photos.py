"""Several photos per person: grouping, preprocessing and the mean embedding rule."""

from __future__ import annotations

import pytest
import torch

from facediffuser_core.errors import InputError
from facediffuser_core.subject.photos import mean_per_person, person_photos, preprocess_people
from facediffuser_core.subject.postfuse import PostfuseModule, SubjectEncoder
from facediffuser_core.subject.reference import preprocess_reference


def _photos(n, seed, h=40, w=30):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(h, w, 3, generator=g) for _ in range(n)]


def test_people_are_grouped_from_images_lists_and_batches():
    a, b = _photos(2, 0)
    assert len(person_photos(a)) == 1
    assert len(person_photos([a, b])) == 2
    assert len(person_photos(torch.stack([a, b]))) == 2  # a ComfyUI IMAGE batch
    with pytest.raises(InputError, match="no photo"):
        person_photos([])


def test_preprocess_people_keeps_photo_order_and_names_the_bad_photo():
    a, b, c = _photos(3, 1)
    people = preprocess_people([[a, b], c], object_resolution=64)
    assert [p.shape[0] for p in people] == [2, 1]
    assert torch.equal(people[0][1], preprocess_reference(b, object_resolution=64))
    with pytest.raises(InputError, match="reference image 1, photo 2"):
        preprocess_people([[a, torch.rand(3, 8, 8)]])


@pytest.fixture(scope="module")
def encoder():
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
    return SubjectEncoder(CLIPVisionModelWithProjection(cfg), PostfuseModule(8)).eval()


def test_several_photos_of_one_person_give_the_mean_embedding(encoder):
    alice = preprocess_people([_photos(3, 2)])[0]
    bob = preprocess_people([_photos(1, 3)])[0]
    with torch.no_grad():
        people = encoder.embed_people([alice, bob])
        each = encoder.embed_images(torch.cat([alice, bob]))
        alone = encoder.embed_images(bob)
    assert people.shape == (2, each.shape[1])
    torch.testing.assert_close(people[0], each[:3].mean(dim=0), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(people[0], each[0])  # the photos really differ
    # one photo gives the plain embedding
    torch.testing.assert_close(people[1], alone[0], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(encoder.embed_people([bob])[0], alone[0])


def test_mean_per_person_checks_the_counts():
    e = torch.arange(12.0).reshape(4, 3)
    torch.testing.assert_close(mean_per_person(e, [3, 1]), torch.stack([e[:3].mean(0), e[3]]))
    assert mean_per_person(e.half(), [2, 2]).dtype == torch.float16
    with pytest.raises(InputError, match="cannot be split"):
        mean_per_person(e, [2, 1])
