"""``facediffuser batch`` in this process: rows rendered by the headless engine on the tiny
models, recorded as they finish, resumed without rendering anything twice.
"""

from __future__ import annotations

import json
from functools import partial

import pytest

from facediffuser_core.batching import Row, read_batch
from facediffuser_core.cli import main
from facediffuser_core.cli import models as cli_models
from facediffuser_core.cluster import BatchOptions, LocalPool, Models, run_batch
from facediffuser_core.cluster.render import generate_settings
from facediffuser_core.errors import InputError
from tests.batch_renderers import TracingRenderer, seed_png

SMALL, STEPS = 64, 4


@pytest.fixture()
def folder(tmp_path, tiny_set, monkeypatch):
    """A batch file beside the tiny set's two portraits; the working folder."""
    import shutil

    for n, path in enumerate(tiny_set.references[:2], 1):
        shutil.copy(path, tmp_path / f"person_{n}.png")
    (tmp_path / "rows.csv").write_text(
        "id,prompt,references,seed\n"
        "beach,a man <|image|> and a woman <|image|> at the beach,person_1.png;person_2.png,1\n"
        "cafe,a woman <|image|> in a cafe,person_2.png,2\n"
        "wrong,a man <|image|> at sea,person_1.png;person_2.png,3\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def model_args(tiny_set) -> list[str]:
    models = {
        "--sdm": tiny_set.sdm_bin,
        "--tdm": tiny_set.tdm_bin,
        "--tokenizer": tiny_set.tokenizer,
    }
    return [part for option, path in models.items() for part in (option, str(path))]


def batch(tiny_set, *extra: str) -> list[str]:
    size = ["--steps", str(STEPS), "--width", str(SMALL), "--height", str(SMALL)]
    return ["batch", "rows.csv", *model_args(tiny_set), *size, "--out", "out", "--no-progress",
            *extra]  # fmt: skip


def entries(folder) -> dict[str, dict]:
    data = json.loads((folder / "out" / "manifest.json").read_text())
    return {record["id"]: record for record in data["entries"].values()}


def test_a_batch_renders_records_and_resumes(folder, tiny_set, tiny_pipeline, capsys, monkeypatch):
    assert main(batch(tiny_set)) == 1  # one invalid row
    out = capsys.readouterr().out
    assert "invalid wrong  line 4: the prompt has 1 <|image|> marker(s) but 2" in out
    assert "3 item(s): 2 done, 0 already done, 0 failed, 1 invalid" in out
    records = entries(folder)
    assert set(records) == {"beach", "cafe"}
    for record in records.values():
        assert record["status"] == "done" and record["worker"] == "local"
        (image,) = record["outputs"]
        assert (folder / "out" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the engine's own picture of the row, as generate makes it
    from PIL import Image

    from facediffuser_core.images import load_image
    from facediffuser_core.pipeline import check_request

    row = read_batch(folder / "rows.csv", {"steps": STEPS, "width": SMALL, "height": SMALL})[1]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a worker's threads (--cpus-per-worker 1)
    try:
        people = [load_image(folder / "person_2.png")]
        direct = tiny_pipeline.generate(
            check_request(generate_settings(row.settings), people), progress=False
        )
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads  # the batch gave this process its threads back
    saved = Image.open(folder / "out" / records["cafe"]["outputs"][0])
    assert saved.tobytes() == direct.images[0].tobytes()
    # a second run loads no model: everything left is done or invalid
    monkeypatch.setattr(cli_models, "open_pipeline", None)
    assert main(batch(tiny_set)) == 1
    assert "0 done, 2 already done" in capsys.readouterr().out


def test_stage_fractions_become_the_nodes_step_boundaries():
    settings = generate_settings({"prompt": "a <|image|>", "steps": 20, "scene_end": 0.25})
    assert (settings.start_merge_step, settings.final_step) == (4, 11)  # 0.25, 0.62 of 20
    plain = generate_settings({"prompt": "a <|image|>", "steps": 20})
    assert (plain.start_merge_step, plain.final_step) == (5, 11)  # the paper's, scaled
    with pytest.raises(InputError, match="must satisfy 0 <= scene_end <= fusion_end"):
        generate_settings({"prompt": "a <|image|>", "scene_end": 0.9, "fusion_end": 0.3})


def rows_of(folder, n: int, **settings) -> list[Row]:
    photo = str(folder / "person_1.png")
    return [
        Row(f"r{i}", i + 2, {"prompt": f"a man <|image|> {i}", "references": [photo],
                             "seed": i, **settings})
        for i in range(n)
    ]  # fmt: skip


def options(folder, tiny_set) -> BatchOptions:
    paths = cli_models.ModelPaths(False, tiny_set.sdm_bin, tiny_set.tdm_bin, tiny_set.tokenizer)
    return BatchOptions(folder / "out", Models(paths), progress=False)


def tracing_pool(folder, tiny_set, trace, **kw):
    return partial(LocalPool, options(folder, tiny_set).models, partial(TracingRenderer,
                   folder=str(trace), seconds=0, **kw))  # fmt: skip


def test_a_stopped_batch_resumes_without_rendering_a_finished_row_again(folder, tiny_set):
    trace = folder / "trace"

    class StopAtThird(TracingRenderer):
        def render(self, task):
            if task.key == "r2":
                raise KeyboardInterrupt
            return super().render(task)

    pool = partial(LocalPool, options(folder, tiny_set).models,
                   partial(StopAtThird, folder=str(trace), seconds=0))  # fmt: skip
    first = run_batch(rows_of(folder, 4), options(folder, tiny_set), pool, log=lambda _: None)
    assert first.interrupted and first.exit_code == 130
    assert first.done == ["r0", "r1"] and first.pending == ["r2", "r3"]
    assert entries(folder)["r2"]["status"] == "pending"
    second = run_batch(
        rows_of(folder, 4), options(folder, tiny_set), tracing_pool(folder, tiny_set, trace),
        log=lambda _: None,
    )  # fmt: skip
    assert second.skipped == ["r0", "r1"] and second.done == ["r2", "r3"]
    assert sorted(p.name.split("-")[1] for p in trace.glob("done-*")) == ["r0", "r1", "r2", "r3"]
    for key, record in entries(folder).items():
        image = (folder / "out" / record["outputs"][0]).read_bytes()
        assert image == seed_png_of(folder, key)


def seed_png_of(folder, key: str) -> bytes:
    from facediffuser_core.cluster.render import task_for

    row = next(r for r in rows_of(folder, 4) if r.key == key)
    return seed_png(task_for("e", key, row.settings, [row.settings["references"]]))


def test_a_changed_row_adds_an_entry_and_a_failed_row_does_not_stop_the_batch(folder, tiny_set):
    trace = folder / "trace"
    quiet = {"log": lambda _: None}
    pool = tracing_pool(folder, tiny_set, trace)
    run_batch(rows_of(folder, 2), options(folder, tiny_set), pool, **quiet)
    changed = rows_of(folder, 2)
    changed[1] = Row("r1", 3, {**changed[1].settings, "prompt": "a man <|image|> elsewhere"})
    changed.append(Row("r2", 4, {**changed[0].settings, "seed": 9}))

    class Refuses(TracingRenderer):
        def render(self, task):
            raise InputError("the engine refused it: do something else")

    refusing = partial(Refuses, folder=str(trace))
    lines = []
    pool = partial(LocalPool, options(folder, tiny_set).models, refusing)
    result = run_batch(changed, options(folder, tiny_set), pool, log=lines.append)
    assert result.skipped == ["r0"] and result.failed == ["r1", "r2"]
    data = json.loads((folder / "out" / "manifest.json").read_text())
    r1 = [r for r in data["entries"].values() if r["id"] == "r1"]
    assert sorted(r["status"] for r in r1) == ["done", "failed"]  # the first is kept
    failed = next(r for r in r1 if r["status"] == "failed")
    assert failed["error"] == "the engine refused it: do something else"
    assert any("item r1: its inputs changed since the last run" in line for line in lines)


def test_batch_command_mistakes_exit_2_before_models_load(folder, tiny_set, capsys, monkeypatch):
    monkeypatch.setattr(cli_models, "open_pipeline", None)
    cases = {
        ("--workers", "2"): "--workers needs --ray",
        ("--ray", "auto", "--workers", "0"): "--workers 0: give 1 or more",
        ("--cpus-per-worker", "0"): "--cpus-per-worker 0: give 1 to 1024",
        ("--ray", " "): "--ray is empty",
        ("--cfg", "99"): "--cfg 99 is out of range: Face-diffuser takes 0 to 30",
        ("--out", ""): "--out is empty",
        ("--tiny-dir", "x"): "--tiny-dir x is only used without --sdm/--tdm",
    }
    for extra, message in cases.items():
        assert main(batch(tiny_set, *extra)) == 2, extra
        assert message in capsys.readouterr().err, extra
    (folder / "bare.csv").write_text("id,seed\na,1\n")
    assert main(["batch", "bare.csv", *model_args(tiny_set), "--out", "o2", "--no-progress"]) == 1
    assert "invalid a  line 2: no prompt and no references: every row needs" in (
        capsys.readouterr().out
    )
    assert main(["batch", "missing.csv", "--out", "o3"]) == 2
    assert "batch file missing.csv cannot be read" in capsys.readouterr().err
