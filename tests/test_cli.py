"""The facediffuser command line, end to end on the tiny models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from facediffuser_core.cli import main


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory):
    """One FACEDIFFUSER_HOME whose tiny-model cache is built once for the session."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture()
def home(tmp_path, monkeypatch, tiny_home):
    monkeypatch.setenv("FACEDIFFUSER_HOME", str(tiny_home))
    return tmp_path


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_main_job_on_the_tiny_default(home, capsys):
    """The README's main-job command: default prompt, references and paper settings."""
    out = home / "out"
    code, stdout, _ = run_cli(["generate", "--out", out, "--no-progress"], capsys)
    assert code == 0, stdout
    image, sheet, manifest = (
        out / "facediffuser_00000.png",
        out / "inspection_00000.png",
        out / "run_00000.json",
    )
    assert image.is_file() and sheet.is_file() and manifest.is_file()
    run = json.loads(manifest.read_text())
    assert run["model_calls"] == {"tdm": 31, "sdm": 34}  # 16 + 15 TDM, 15 + 19 SDM
    assert run["settings"]["steps"] == 50 and run["settings"]["start_merge_step"] == 15
    assert len(run["sdm_share_per_fusion_step"]) == 15
    from PIL import Image

    with Image.open(image) as im:
        assert im.size == (128, 128)
    # a second run never overwrites the first
    code, _, _ = run_cli(["generate", "--out", out, "--no-progress", "--steps", "4"], capsys)
    assert code == 0 and (out / "facediffuser_00001.png").is_file()


def test_generate_parses_and_tokenizes_the_prompt_once(home, capsys, monkeypatch):
    """The prompt is validated once into a Request; nothing downstream parses it again."""
    from facediffuser_core.subject import encode
    from facediffuser_core.subject.prompt import ParsedPrompt

    parses, tokenizes = [], []
    real_init, real_tokenize = ParsedPrompt.__init__, encode.tokenize_prompt

    def counting_init(self, *args, **kwargs):
        parses.append(1)
        real_init(self, *args, **kwargs)

    def counting_tokenize(prompt, tokenize):
        tokenizes.append(type(prompt).__name__)
        return real_tokenize(prompt, tokenize)

    monkeypatch.setattr(ParsedPrompt, "__init__", counting_init)
    monkeypatch.setattr(encode, "tokenize_prompt", counting_tokenize)
    args = ["generate", "--out", home / "once", "--no-progress", "--steps", "3"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert len(parses) == 1
    assert tokenizes == ["ParsedPrompt"]  # handed the parsed prompt, not the text


def test_the_parsed_prompt_goes_down_to_the_text_encoder_without_coming_back(home, capsys):
    """Once parsed, the prompt passes subject.prompt (its checks) -> pipeline (the Request)
    -> subject.encode -> subject.text, each entered once (docs/architecture.md)."""
    import sys

    from facediffuser_core.pipeline import Request
    from facediffuser_core.subject.prompt import ParsedPrompt
    from facediffuser_core.subject.text import SubjectTokens

    visits = []

    def profile(frame, event, arg):
        module = frame.f_globals.get("__name__", "")
        if event != "call" or not module.startswith("facediffuser_core"):
            return
        if frame.f_code.co_name == "__init__":
            return  # a value being built, not a step of the path
        if any(
            isinstance(v, (ParsedPrompt, Request, SubjectTokens)) for v in frame.f_locals.values()
        ):
            if not visits or visits[-1] != module:
                visits.append(module)

    sys.setprofile(profile)
    try:
        code, _, err = run_cli(
            ["generate", "--out", home / "path", "--no-progress", "--steps", "3"], capsys
        )
    finally:
        sys.setprofile(None)
    assert code == 0, err
    assert visits == [
        "facediffuser_core.subject.prompt",
        "facediffuser_core.pipeline",
        "facediffuser_core.subject.encode",
        "facediffuser_core.subject.text",
    ]  # four modules, none entered twice


def test_steps_scale_the_paper_boundaries(home, capsys):
    out = home / "out"
    code, _, _ = run_cli(
        [
            "generate",
            "--out",
            out,
            "--no-progress",
            "--steps",
            "25",
            "--width",
            "64",
            "--height",
            "64",
        ],
        capsys,
    )
    assert code == 0
    run = json.loads((out / "run_00000.json").read_text())
    assert (run["settings"]["start_merge_step"], run["settings"]["final_step"]) == (7, 15)


def test_explicit_models_and_references(home, tiny_set, capsys):
    out = home / "out"
    args = [
        "generate",
        "a woman <|image|> in the snow",
        "-r",
        tiny_set.references[1],
        "--sdm",
        tiny_set.sdm_converted,
        "--tdm",
        tiny_set.tdm_bin,
        "--tokenizer",
        tiny_set.tokenizer,
        "--steps",
        "6",
        "--width",
        "64",
        "--height",
        "64",
        "--fusion",
        "soft",
        "--scheduler",
        "euler",
        "--overlap",
        "--out",
        out,
        "--no-progress",
    ]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    run = json.loads((out / "run_00000.json").read_text())
    assert run["references"] == [str(tiny_set.references[1])]
    assert run["fusion"]["mode"] == "soft"
    assert run["settings"]["overlap"] is True


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["a man <|image|> and a woman <|image|>", "-r", "REF"], "2 <|image|> marker(s) but 1"),
        (["a man <|image|>", "-r", "missing.png"], "does not exist"),
        (["a man <|image|>", "-r", "REF", "--width", "100"], "multiple of 8"),
        (["<|image|> a man", "-r", "REF"], "not right after a word"),
        (["a <|image|> b <|image|> c <|image|> d <|image|> e <|image|>"], "at most 4"),
        (["a man <|image|>", "-r", "REF", "--sdm", "x.bin"], "both --sdm and --tdm"),
    ],
)
def test_bad_input_is_one_clear_line(home, tiny_set, capsys, extra, message):
    args = [str(tiny_set.references[0]) if a == "REF" else a for a in extra]
    code, _, err = run_cli(["generate", *args, "--out", home / "out"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("facediffuser: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (home / "out").exists(), "nothing may be written for a refused request"


def test_convert_and_tiny_commands(tmp_path, tiny_set, capsys):
    from facediffuser_core.weights.reading import read_state_dict

    code, stdout, _ = run_cli(
        ["convert", tiny_set.sdm_bin, tmp_path / "set", "--no-progress"], capsys
    )
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "set").iterdir())
    assert names == [
        "image_encoder.safetensors",
        "postfuse.safetensors",
        "text_encoder.safetensors",
        "unet.safetensors",
        "vae.safetensors",
    ]
    half = tmp_path / "half"
    assert (
        run_cli(["convert", tiny_set.tdm_bin, half, "--dtype", "fp16", "--no-progress"], capsys)[0]
        == 0
    )
    assert read_state_dict(half / "unet.safetensors")["out.2.weight"].dtype == torch.float16
    code, stdout, _ = run_cli(["tiny", tmp_path / "tiny"], capsys)
    assert code == 0 and (tmp_path / "tiny" / "SDM" / "pytorch_model.bin").is_file()
    code, _, err = run_cli(["tiny", tmp_path / "other", "--dtype", "published"], capsys)
    assert code == 2 and "--dtype applies to --full-size sets" in err
    assert not (tmp_path / "other").exists()


def test_convert_refuses_a_pickle_with_code(tmp_path, capsys):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "pytorch_model.bin"
    torch.save({"unet.conv_in.weight": torch.zeros(1), "payload": Evil()}, bad)
    code, _, err = run_cli(["convert", bad, tmp_path / "out"], capsys)
    assert code == 2 and "pickled" in err
    assert not marker.exists()


def test_module_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "facediffuser_core", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    for command in ("generate", "convert", "tiny"):
        assert command in proc.stdout


def test_tiny_comfyui_layout(tmp_path, capsys):
    from facediffuser_core.weights.modelfiles import find_tokenizer, scan_model_folder

    code, _, _ = run_cli(["tiny", tmp_path, "--comfyui"], capsys)
    assert code == 0
    models = tmp_path / "models" / "facediffuser"
    assert scan_model_folder(models) == [
        "SDM/pytorch_model.bin",
        "TDM/pytorch_model.bin",
        "sdm-converted/",
        "tdm-converted/",
    ]
    assert find_tokenizer(models / "sdm-converted") == models / "tokenizer"
    assert find_tokenizer(models / "SDM" / "pytorch_model.bin") == models / "tokenizer"
    inputs = sorted(p.name for p in (tmp_path / "input").iterdir())
    assert inputs == ["facediffuser_person_1.png", "facediffuser_person_2.png"]


def test_evaluate_names_a_missing_model_before_any_work(tmp_path, capsys):
    code, _, err = run_cli(
        ["evaluate", "--sdm", tmp_path / "nope", "--tdm", tmp_path / "nope", "--people", tmp_path],
        capsys,
    )
    assert code == 2 and "--sdm" in err and "does not exist" in err


def test_reference_preset_runs_the_authors_release_on_the_tiny_default(home, capsys):
    out = home / "ref"
    code, stdout, err = run_cli(
        ["generate", "--out", out, "--no-progress", "--preset", "reference"], capsys
    )
    assert code == 0, err
    run = json.loads((out / "run_00000.json").read_text())
    assert run["settings"]["scheduler"] == "pndm" and run["settings"]["step_count"] == "loop"
    # 51 PNDM loop entries: 16 scene + 15 fusion TDM calls, 15 fusion + 20 subject SDM calls
    assert run["model_calls"] == {"tdm": 31, "sdm": 35}


def test_several_photos_per_person_and_a_region(home, capsys, tmp_path):
    from PIL import Image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (40, 50), (200, 150, 120)).save(a)
    Image.new("RGB", (50, 50), (90, 60, 40)).save(b)
    mask = tmp_path / "left.png"
    region = Image.new("L", (128, 128), 0)
    region.paste(255, (0, 0, 64, 128))
    region.save(mask)
    out = home / "multi"
    args = ["generate", "--out", out, "--no-progress", "--steps", "6", "-r", f"{a},{b}"]
    args += ["-r", str(b), "--region", mask]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    run = json.loads((out / "run_00000.json").read_text())
    assert run["references"] == [[str(a), str(b)], str(b)]
    assert run["region"] == str(mask)
    # a mask of another shape is refused before any model work
    Image.new("L", (64, 128), 255).save(mask)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--region" in err and "stretched" in err
    code, _, err = run_cli(["generate", "--out", out, "-r", f"{a},", "-r", str(b)], capsys)
    assert code == 2 and "empty photo path" in err
