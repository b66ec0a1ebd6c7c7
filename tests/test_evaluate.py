"""The evaluation protocol: prompts, methods, scoring plumbing, summary and CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from facediffuser_core.engine.stages import Stage, StageBoundaries
from facediffuser_core.errors import InputError
from facediffuser_core.evaluate import (
    Evaluation,
    Person,
    Sample,
    contact_sheet,
    evaluate,
    fill,
    format_summary,
    load_people,
    load_prompts,
    method_settings,
)
from facediffuser_core.pipeline import GenerateSettings


def test_the_shipped_prompt_list():
    templates = load_prompts("fastcomposer")
    assert len(templates) == 40 and len(set(templates)) == 40
    assert templates[0] == "a {person} wearing a red hat"
    prompt = fill(templates[20], Person("x", None, "woman"))
    assert prompt == "a woman <|image|> riding a horse"


def test_prompt_files_are_checked(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("# comment\na photo of a man\n")
    with pytest.raises(InputError, match=r"bad.txt:2: a template needs exactly one \{person\}"):
        load_prompts(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")


def test_methods_move_the_boundaries():
    base = GenerateSettings(prompt="", steps=50, start_merge_step=15, final_step=30)
    assert method_settings(base, "snf") is base
    tdm = method_settings(base, "tdm")
    assert StageBoundaries(tdm.start_merge_step, tdm.final_step, 50).counts()[Stage.SCENE] == 50
    sdm = method_settings(base, "sdm")
    assert StageBoundaries(sdm.start_merge_step, sdm.final_step, 50).counts()[Stage.SUBJECT] == 50
    with pytest.raises(InputError, match="unknown method"):
        method_settings(base, "both")


def test_people_folder_and_class_words(tmp_path, tiny_set):
    import shutil

    for ref in tiny_set.references:
        shutil.copy(ref, tmp_path / ref.name)
    (tmp_path / "people.json").write_text(json.dumps({"person_1.png": "man"}))
    people = load_people(tmp_path)
    assert [(p.name, p.class_word) for p in people] == [("person_1", "man"), ("person_2", "person")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        load_people(empty)
    with pytest.raises(InputError, match="does not exist"):
        load_people(tmp_path / "absent")


@dataclass
class EchoPipeline:
    """Returns the reference itself k times: identity must come out as ~1 for every method."""

    calls: list

    def generate(self, settings, references, progress=False):
        from facediffuser_core.images import to_pil

        self.calls.append(settings)
        return SimpleNamespace(images=[to_pil(references[0])] * settings.num_images)


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("insightface")
    from facediffuser_core.faces import load_face_analysis
    from facediffuser_core.tiny.faces import write_tiny_face_pack

    root = tmp_path_factory.mktemp("faces")
    write_tiny_face_pack(root / "models" / "buffalo_l")
    return load_face_analysis(root, "buffalo_l", provider="CPU")


def test_evaluate_scores_identity_and_consistency_with_shared_seeds(tiny_set, analyzer):
    people = [Person(p.stem, p, "man") for p in tiny_set.references]
    templates = ["a {person} on the beach", "a {person} in the snow"]
    texts = []

    def clip(images, prompts):
        texts.extend(prompts)
        return [0.25] * len(images)

    pipe = EchoPipeline([])
    base = GenerateSettings(prompt="", steps=10, start_merge_step=2, final_step=5, seed=7)
    result = evaluate(pipe, people, templates, base, k=3, faces=analyzer, clip=clip, progress=False)
    assert len(result.samples) == 2 * 2 * 3 * 3
    assert len(pipe.calls) == 12 and {c.seed for c in pipe.calls} == {7}
    assert {c.num_images for c in pipe.calls} == {3}
    assert pipe.calls[0].prompt == "a man <|image|> on the beach"
    assert texts[0] == "a man on the beach"  # markers removed for CLIP
    summary = result.summary()
    assert set(summary) == {"snf", "tdm", "sdm"}
    for entry in summary.values():
        assert entry["identity"]["mean"] > 0.99 and entry["images"] == 12
        assert entry["consistency"] == {"mean": 0.25, "std": 0.0}


def test_summary_table_and_contact_sheet():
    from PIL import Image

    image = Image.new("RGB", (32, 32))
    result = Evaluation(
        [
            Sample("a", "p", "snf", 0, image, 0.5, 0.2),
            Sample("a", "p", "snf", 1, image, 0.7, None),
            Sample("a", "p", "tdm", 0, image, None, None),
        ]
    )
    table = format_summary(result)
    assert "| Face-diffuser (SNF) | 0.600 ± 0.100 | 0.200 ± 0.000 | 2 |" in table
    assert "| TDM only | n/a | n/a | 1 |" in table
    sheet = contact_sheet(result, cell=32)
    assert sheet.size == (150 + 2 * 32, 2 * (32 + 26) + 4)


def test_cli_evaluate_on_the_tiny_models(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    from facediffuser_core.cli import main

    monkeypatch.setenv("FACEDIFFUSER_HOME", str(tmp_path / "home"))
    code = main(
        [
            "evaluate",
            "--out",
            str(tmp_path / "out"),
            "--limit-prompts",
            "1",
            "--k",
            "1",
            "--steps",
            "4",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| Face-diffuser (SNF) |" in out and "| SDM only |" in out
    data = json.loads((tmp_path / "out" / "evaluation_00000.json").read_text())
    assert len(data["samples"]) == 2 * 1 * 3  # 2 tiny people, 1 prompt, 3 methods, k=1
    assert all(s["identity"] is not None and s["consistency"] is not None for s in data["samples"])
    assert (tmp_path / "out" / "contact_sheet_00000.png").is_file()
