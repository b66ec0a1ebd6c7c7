"""Every command-line mistake is one line naming the problem and the fix, before any work.

Each test checks the exact message; none of these may load a model or run a step (the
pipeline is replaced by a tripwire) or leave a traceback.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import torch

import facediffuser_core.cli.models as cli_models
from facediffuser_core.cli import main, memory


@pytest.fixture()
def home(tmp_path, monkeypatch, tiny_set):
    """A tiny-model cache that already exists, and no model loading allowed."""
    monkeypatch.setenv("FACEDIFFUSER_HOME", str(tmp_path / "home"))

    def tripwire(*args, **kwargs):
        raise AssertionError("a model was loaded for a request that should be refused")

    monkeypatch.setattr(cli_models, "open_pipeline", tripwire)
    monkeypatch.setattr("facediffuser_core.cli.generate._open_pipeline", tripwire)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error_of(args, capsys) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("facediffuser: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0].removeprefix("facediffuser: error: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_device_without_cuda(home, capsys):
    kind = "is a CPU-only build" if torch.version.cuda is None else "sees no usable GPU"
    assert error_of(["generate", "--device", "cuda"], capsys) == (
        f"--device cuda: this torch ({torch.__version__}) {kind}: use --device cpu (or auto), "
        "or install a CUDA build of torch (facediffuser doctor prints the command)"
    )


def test_unknown_device(home, capsys):
    assert error_of(["generate", "--device", "gpu"], capsys) == (
        "--device 'gpu' is not a device: use auto, cpu, cuda, cuda:N (N = GPU index) or mps"
    )


def test_out_naming_an_existing_file_is_refused_before_generating(home, capsys):
    (home / "picture.png").write_bytes(b"x")
    assert error_of(["generate", "--out", "picture.png"], capsys) == (
        "--out picture.png is an existing file, but --out names a folder (the files are "
        "written into it and never overwritten): give a folder, e.g. --out picture-out"
    )


def test_a_size_that_cannot_fit_names_the_largest_that_can(home, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 4 * 2**30)
    message = error_of(["generate", "--width", "100000", "--height", "100000"], capsys)
    prefix = "--width 100000 --height 100000 needs about "
    assert message.startswith(prefix) and " but cpu has 4.0 GB of available RAM: use " in message
    assert message.endswith(" or smaller (the largest that fits)")
    side = int(message.split("use --width ")[1].split()[0])
    assert message.endswith(
        f"use --width {side} --height {side} or smaller (the largest that fits)"
    )
    weights = memory.weight_elements(
        [home / "home" / "tiny-v0.1.0" / "SDM", home / "home" / "tiny-v0.1.0" / "TDM"]
    )
    run = memory.Footprint(weights, element_size=4, widths=memory.Widths(32, 32))
    assert memory.peak_bytes(side, side, run) <= 4 * 2**30
    assert memory.peak_bytes(side + 8, side + 8, run) > 4 * 2**30
    # the tiny-model cache it built has ordinary permissions (not mkdtemp's 0700)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((home / "home" / "tiny-v0.1.0").stat().st_mode) == 0o777 & ~mask


def test_memory_estimate_message():
    sd15 = memory.Footprint(weights=2_000_000_000, element_size=4)
    with pytest.raises(memory.InputError) as info:
        memory.check_fits(4096, 4096, sd15, device="cpu", available=16 * 2**30)
    assert str(info.value) == (
        "--width 4096 --height 4096 needs about 109.8 GB but cpu has 16.0 GB of available RAM: "
        "use --width 1016 --height 1016 or smaller (the largest that fits)"
    )
    with pytest.raises(memory.InputError, match="the models alone do not fit"):
        memory.check_fits(512, 512, sd15, device="cpu", available=2**30)
    # SD1.5 at its own size fits a 16 GB machine
    memory.check_fits(512, 512, sd15, device="cpu", available=16 * 2**30)


def test_folder_without_a_model(home, capsys):
    (home / "empty").mkdir()
    assert error_of(["generate", "--sdm", "empty", "--tdm", "empty"], capsys) == (
        "--sdm empty is a folder with no model in it (neither pytorch_model.bin nor a converted "
        "set's unet.safetensors): point to the SDM/ or TDM/ folder of CodeGoat24/Face-diffuser, "
        "the .bin inside it, or a folder written by 'facediffuser convert'"
    )


def _png(path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(path)
    return path


def test_png_given_as_a_model(home, tiny_set, capsys):
    _png(home / "face.png")
    assert error_of(["generate", "--sdm", "face.png", "--tdm", tiny_set.tdm_bin], capsys) == (
        "--sdm face.png is a PNG image, not a model file: give the SDM/ or TDM/ "
        "pytorch_model.bin of CodeGoat24/Face-diffuser (or its folder, or a converted set)"
    )


def test_png_given_to_convert(home, capsys):
    _png(home / "face.png")
    assert error_of(["convert", "face.png", "out"], capsys) == (
        "source face.png is a PNG image, not a model file: give the SDM/ or TDM/ "
        "pytorch_model.bin of CodeGoat24/Face-diffuser (or its folder, or a converted set)"
    )
    assert not (home / "out").exists()


def test_html_page_saved_as_the_model(tmp_path):
    from facediffuser_core.errors import CheckpointError
    from facediffuser_core.weights.reading import read_state_dict

    page = tmp_path / "pytorch_model.bin"
    page.write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    with pytest.raises(CheckpointError, match="is an HTML page .a failed download"):
        read_state_dict(page)


def test_tokenizer_with_the_tiny_models(home, capsys):
    assert error_of(["generate", "--tokenizer", "/nonexistent"], capsys) == (
        "--tokenizer /nonexistent is only used with --sdm and --tdm: the built-in tiny models "
        "bring their own tokenizer; drop --tokenizer, or give --sdm and --tdm"
    )


def test_missing_tokenizer_folder_with_real_models(home, tiny_set, capsys):
    args = ["generate", "--sdm", tiny_set.sdm_bin, "--tdm", tiny_set.tdm_bin]
    assert error_of([*args, "--tokenizer", "/nonexistent"], capsys) == (
        "--tokenizer /nonexistent is not a folder: give the tokenizer/ folder (vocab.json + "
        "merges.txt) of runwayml/stable-diffusion-v1-5"
    )
    (home / "tok").mkdir()
    (home / "tok" / "vocab.json").write_text("{}")
    assert error_of([*args, "--tokenizer", "tok"], capsys) == (
        "--tokenizer tok has no merges.txt: give the tokenizer/ folder (vocab.json + "
        "merges.txt) of runwayml/stable-diffusion-v1-5"
    )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--cfg", "-1", "--cfg -1 is too small: it must be at least 0; the guidance scale is 0 "
         "or more (5 as in the paper)"),
        ("--steps", "0", "--steps 0 is too small: it must be at least 1; 50 as in the paper"),
        ("--num-images", "0", "--num-images 0 is too small: it must be at least 1; ask for at "
         "least one image"),
        ("--seed", "-5", "--seed -5 is too small: it must be at least 0; seeds are 0 or more"),
        ("--temperature", "0", "--temperature 0 is too small: it must be at least 0.01; 1 is "
         "the default"),
        # the same ranges as the nodes' widgets (facediffuser_core/ranges.py)
        ("--cfg", "31", "--cfg 31 is too large: it must be at most 30; the guidance scale is 0 "
         "or more (5 as in the paper)"),
        ("--object-resolution", "100", "--object-resolution 100 is too small: it must be at "
         "least 224; 512 as in the paper"),
        ("--kernel-size", "16", "--kernel-size 16 is too large: it must be at most 15; 4 as in "
         "the paper"),
        ("--kernel-size", "0", "--kernel-size 0 is too small: it must be at least 1; 4 as in "
         "the paper"),
    ],
)  # fmt: skip
def test_numbers_out_of_range(home, capsys, option, value, message):
    assert error_of(["generate", option, value], capsys) == message


def test_steps_without_a_fusion_step_is_refused_with_the_fix(home, capsys):
    assert error_of(["generate", "--steps", "2"], capsys) == (
        "--steps 2 leaves no fusion step (SNF never runs: the paper's stage boundaries scale to "
        "scene steps up to 0 and fusion up to 0): use --steps 3 or more"
    )


def test_explicit_boundaries_without_fusion_only_warn(home, capsys, monkeypatch):
    from facediffuser_core.cli import build_parser
    from facediffuser_core.cli.generate import check_fusion_steps
    from facediffuser_core.pipeline import GenerateSettings

    args = build_parser().parse_args(
        ["generate", "--steps", "10", "--start-merge-step", "4", "--final-step", "4"]
    )
    settings = GenerateSettings(
        prompt="a man <|image|>", steps=10, start_merge_step=4, final_step=4
    )
    check_fusion_steps(args, settings)  # explicit boundaries: a warning, not an error
    assert capsys.readouterr().err.strip() == (
        "facediffuser: warning: --start-merge-step 4 --final-step 4 with --steps 10 leave no "
        "fusion step (SNF never runs): fusion runs at steps start-merge-step+1 to final-step, "
        "counted from 0: raise --final-step or lower --start-merge-step"
    )


def test_prompt_as_option_and_positional(home, capsys):
    # -p reaches the prompt parser (its error proves it was read)
    assert "not right after a word" in error_of(["generate", "-p", "<|image|> a man"], capsys)
    assert error_of(["generate", "a", "--prompt", "b"], capsys) == (
        "the prompt was given twice (as an argument and with -p/--prompt): give it once"
    )


def test_tiny_without_diffusers_says_what_to_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name)
    )
    python = sys.executable
    assert error_of(["tiny", tmp_path / "t"], capsys) == (
        f"the Python package 'diffusers' is not installed in {python}: install the pack's "
        f"requirements with that python ({python} -m pip install -r requirements.txt in the "
        f"pack's folder, or {python} -m pip install diffusers); '{python} -m facediffuser_core "
        "doctor' checks every dependency"
    )


def test_a_missing_package_found_late_is_one_line_too(capsys, monkeypatch):
    import facediffuser_core.cli.doctor as doctor_command

    def run(args):
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(doctor_command, "run", run)
    assert "'transformers' is not installed" in error_of(["doctor"], capsys)


def test_no_traceback_unless_debug(tmp_path):
    env = {**os.environ, "FACEDIFFUSER_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "facediffuser_core", "generate", "--cfg", "-1"]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.startswith("facediffuser: error: --cfg -1 is too small")
    loud = subprocess.run(
        [*command, "--debug"], capture_output=True, text=True, env=env, timeout=120
    )
    assert "Traceback" in loud.stderr and "InputError: --cfg -1" in loud.stderr


def test_convert_asks_for_force_and_writes_ordinary_permissions(tmp_path, tiny_set, capsys):
    old = os.umask(0o022)
    try:
        assert main(["convert", str(tiny_set.tdm_bin), str(tmp_path / "set"), "--no-progress"]) == 0
        capsys.readouterr()
        for f in (tmp_path / "set").iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
        assert error_of(["convert", tiny_set.tdm_bin, tmp_path / "set"], capsys) == (
            f"{tmp_path / 'set'} already holds a converted set (unet.safetensors, "
            "vae.safetensors, text_encoder.safetensors): add --force to replace it, or choose "
            "another folder"
        )
        args = ["convert", str(tiny_set.tdm_bin), str(tmp_path / "set"), "--force"]
        assert main([*args, "--no-progress"]) == 0
    finally:
        os.umask(old)


def test_generate_and_queue_share_the_prompt_and_batch_size_forms():
    from facediffuser_core.cli import build_parser

    parser = build_parser()
    gen = parser.parse_args(["generate", "-p", "a man <|image|>", "--batch-size", "3"])
    assert (gen.prompt_option, gen.num_images) == ("a man <|image|>", 3)
    queue = parser.parse_args(["queue", "-p", "a man <|image|>", "--num-images", "2"])
    assert (queue.prompt, queue.batch_size) == ("a man <|image|>", 2)


def test_more_mistakes_found_by_trying(home, capsys):
    (home / "refs").mkdir()
    (home / "afile").write_text("x")
    assert error_of(["generate", "a man <|image|>", "-r", "refs"], capsys) == (
        "reference image refs is a folder: give an image file in it"
    )
    assert error_of(["evaluate", "--methods", "snf,foo"], capsys) == (
        "--methods 'snf,foo': foo is not a method; give a comma list of snf, tdm, sdm"
    )
    assert error_of(["queue", "-p", "a man <|image|>", "--out", "afile"], capsys) == (
        "--out afile is an existing file, but --out names a folder (the files are written "
        "into it and never overwritten): give a folder, e.g. --out afile-out"
    )
    assert error_of(["tiny", "afile"], capsys) == (
        "output afile is an existing file: give a folder for the tiny set"
    )


def test_weight_elements_counts_torch_files_of_mixed_dtypes_exactly(tmp_path):
    state = {"a": torch.zeros(10, dtype=torch.bfloat16), "b": torch.zeros(3), "c": torch.arange(4)}
    torch.save({"state_dict": state}, tmp_path / "w.bin")  # the published files mix dtypes
    assert memory.weight_elements([tmp_path / "w.bin"]) == 17
    (tmp_path / "bad.bin").write_bytes(b"x" * 400)  # unreadable: estimated from the size
    assert memory.weight_elements([tmp_path / "bad.bin"]) == 100
