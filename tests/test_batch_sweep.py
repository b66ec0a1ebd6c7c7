"""A generated sweep over every input of ``facediffuser queue`` and ``facediffuser batch``:
each command-line option, positional argument, batch-file column and JSONL value type gets
the families of bad values (empty, wrong type, out of range, missing file, a folder, an
unreadable or unwritable path, a huge image, non-UTF-8 text). None may end in a traceback:
each is one ``facediffuser: error:`` line (or argparse's usage error), found before any
server is asked or any model is loaded, or an invalid row.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facediffuser_core.batching import COLUMNS, read_batch
from facediffuser_core.cli import build_parser, main
from facediffuser_core.cli import models as cli_models
from facediffuser_core.errors import FaceDiffuserError, InputError
from tests.test_batching import huge_png

ROOT = Path(__file__).resolve().parents[1]
NOT_UTF8 = os.fsdecode(b"caf\xe9 <|image|>")  # what Python makes of Latin-1 bytes in argv


@pytest.fixture()
def world(tmp_path, tiny_set, monkeypatch):
    """Files of every kind, a server address nobody listens on, and no model loading."""
    import shutil
    import socket

    shutil.copy(tiny_set.references[0], tmp_path / "me.png")
    huge_png(tmp_path / "huge.png")
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "latin.csv").write_bytes("prompt\nun caf\xe9 <|image|>\n".encode("latin-1"))
    (tmp_path / "rows.csv").write_text("id,prompt,references\na,a man <|image|>,me.png\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"

    def no_models(*args, **kwargs):
        raise InputError("the sweep reached model loading (the options were accepted)")

    monkeypatch.setattr(cli_models, "open_pipeline", no_models)
    monkeypatch.chdir(tmp_path)
    return {"dir": tmp_path, "dead": dead, "tiny": tiny_set}


def bad_values(world) -> list[str]:
    d = world["dir"]
    return [
        "",  # empty
        "   ",
        "abc",  # wrong type for a number
        "-1",  # out of range
        "0",
        "1e309",  # infinite
        "nan",
        "99999999999999999999999",
        "3.5",
        str(d / "missing.png"),  # missing file
        str(d / "folder"),  # a folder where a file is wanted
        str(d / "afile"),  # a file where a folder is wanted
        "/proc/self/mem",  # unreadable
        "/sys/facediffuser-sweep/out",  # unwritable, even for root
        str(d / "huge.png"),  # a huge image
        str(d / "latin.csv"),  # a non-UTF-8 file
        NOT_UTF8,  # non-UTF-8 text
        "htp:/x",
    ]


def base_command(command: str, world) -> list[str]:
    out = ["--out", str(world["dir"] / "out"), "--no-progress"]
    if command == "queue":
        return ["queue", "-s", world["dead"], "-p", "a man <|image|>", "-r", "me.png", *out]
    tiny = world["tiny"]
    models = ["--sdm", str(tiny.sdm_bin), "--tdm", str(tiny.tdm_bin)]
    return ["batch", "rows.csv", *models, "--tokenizer", str(tiny.tokenizer), *out]


def options_of(command: str) -> list[argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[command]._actions if a.dest not in ("help", "debug")]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of one command in this process; an exception fails the test."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage error
        code = exc.code
    err = capsys.readouterr().err
    return code, err


def check(argv: list[str], code: int, err: str) -> None:
    """No traceback; a refusal ends in one ``facediffuser: error:`` line (after progress
    lines, if any), or in argparse's usage block (a value of the wrong type)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err, (argv, err)
    if code != 2:
        assert code in (0, 1), (argv, code, err)
        return
    ours = [line for line in lines if line.startswith("facediffuser: error:")]
    argparse_error = lines[0].startswith("usage:") and ": error: " in lines[-1]
    assert (len(ours) == 1 and lines[-1] == ours[0]) or argparse_error, (argv, err)


@pytest.mark.parametrize("command", ["queue", "batch"])
def test_every_option_with_every_bad_value_is_one_line(command, world, capsys):
    tried = 0
    for action in options_of(command):
        values = bad_values(world)
        for value in values:
            argv = base_command(command, world)
            if action.option_strings:
                if action.nargs == 0:
                    continue  # a flag takes no value
                argv = [*argv, action.option_strings[0], value]
            else:
                position = argv.index(command) + 1
                argv = [*argv[:position], value, *argv[position + (command == "batch") :]]
            code, err = run_cli(argv, capsys)
            check(argv, code, err)
            tried += 1
    assert tried > 300


def test_a_batch_file_with_every_bad_cell_gives_invalid_rows_only(world):
    """Each column, each bad value: the row is invalid (or fine), or the whole file is
    refused in one line (an unknown column cannot happen: these are the known ones)."""
    path = world["dir"] / "sweep.csv"
    for column in COLUMNS:
        names = list(dict.fromkeys(["id", "prompt", "references", column]))
        for value in bad_values(world):
            row = {"id": "r", "prompt": "a man <|image|>", "references": "me.png", column: value}
            with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=names)
                writer.writeheader()
                writer.writerow(row)
            try:
                rows = read_batch(path)
            except InputError as exc:
                assert "\n" not in str(exc)
                continue
            assert len(rows) == 1 and (rows[0].error is None or rows[0].error.startswith("line"))


@pytest.mark.parametrize("value", [None, True, 1.5, -3, [], {}, [[]], [1, 2], "x" * 10000, 2**70])
def test_a_jsonl_row_with_any_json_type_in_any_column_is_invalid_or_fine(world, value):
    for column in COLUMNS:
        row = {"id": "r", "prompt": "a man <|image|>", "references": ["me.png"], column: value}
        (world["dir"] / "sweep.jsonl").write_text(json.dumps(row) + "\n")
        try:
            (parsed,) = read_batch(world["dir"] / "sweep.jsonl")
        except FaceDiffuserError:
            continue
        assert parsed.error is None or parsed.error.startswith("line 1: "), (column, value)


def test_non_utf8_bytes_on_a_real_command_line_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACEDIFFUSER_HOME": str(tmp_path)}
    for command in (["queue", "-s", "http://127.0.0.1:9"], ["batch", "rows.csv"]):
        argv = [sys.executable.encode(), b"-m", b"facediffuser_core", *map(str.encode, command)]
        argv += [b"-p", b"caf\xe9 <|image|>", b"--out", str(tmp_path / "o").encode()]
        run = subprocess.run(argv, capture_output=True, env=env, cwd=tmp_path, timeout=120)
        err = run.stderr.decode("utf-8", "replace")
        assert run.returncode == 2 and "Traceback" not in err, err
        assert err.count("facediffuser: error:") == 1
        assert "not UTF-8 text" in err or "cannot be read" in err
