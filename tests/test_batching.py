"""The batch model (rows from CSV, JSONL and options, validated once) and the manifest both
executors keep. No server, no models: plain files.
"""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from facediffuser_core.batching import (
    Manifest,
    Row,
    check_limits,
    command_line_row,
    option_settings,
    pack_limits,
    read_batch,
    regroup,
    require,
)
from facediffuser_core.batching import manifest as batch_manifest
from facediffuser_core.errors import InputError
from facediffuser_core.ranges import LATENT_SIZE, NUMBERS
from tests.batch_renderers import portraits


@pytest.fixture()
def refs(tmp_path):
    return portraits(tmp_path)


def huge_png(path, width: int = 20000, height: int = 20000) -> None:
    """A small file that claims to be a huge image (the header is all a check should read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


# =========================================================================== rows


def test_csv_batch_rows_become_typed_rows(tmp_path, refs):
    (tmp_path / "batch.csv").write_text(
        "id,prompt,references,seed,steps,cfg,batch,Scene-End\n"
        "beach,a man <|image|> and a woman <|image|> at the beach,him.png;her.png,1,20,4.5,2,0.3\n"
        ",a woman <|image|> in a cafe,her.png,2,,,,\n"
        "\n"
        "bad,a man <|image|> at sea,him.png;her.png,3,,,,\n"
        "nofile,a man <|image|> at sea,nothere.png,4,,,,\n"
        "seedy,a man <|image|> at sea,him.png,x,,,,\n"
        "beach,a man <|image|> at sea,him.png,5,,,,\n"
        '"quoted","a man <|image|>, on\ntwo lines",him.png,6,,,,\n'
    )
    rows = read_batch(tmp_path / "batch.csv", {"steps": 8, "width": 64})
    first = rows[0]
    assert first.key == "beach" and first.error is None and first.line == 2
    assert first.settings == {
        "steps": 20,
        "width": 64,
        "prompt": "a man <|image|> and a woman <|image|> at the beach",
        "references": [str(refs[0]), str(refs[1])],
        "seed": 1,
        "cfg": 4.5,
        "batch_size": 2,
        "scene_end": 0.3,
    }
    assert rows[1].key == "0002" and rows[1].settings["steps"] == 8  # default kept
    errors = {r.key: r.error for r in rows[2:]}
    assert "line 5: the prompt has 1 <|image|> marker(s) but 2" in errors["bad"]
    assert "line 6: reference image 'nothere.png' not found" in errors["nofile"]
    assert "line 7: seed must be a whole number" in errors["seedy"]
    assert "line 8: id 'beach' repeats line 2" in errors["0006"]
    assert rows[-1].settings["prompt"] == "a man <|image|>, on\ntwo lines"  # a quoted newline


def test_jsonl_batch_and_person_columns(tmp_path, refs):
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"prompt": "a man <|image|> rowing", "person_1": "him.png", "seed": 3}) + "\n"
        "# a comment\n"
        + json.dumps(
            {
                "id": "x",
                "prompt": "a man <|image|> and a woman <|image|> dancing",
                "references": ["him.png", "her.png"],
                "width": 100,
            }
        )
        + "\n"
        "{not json\n"
        "[1, 2]\n"
        + json.dumps({"prompt": {"text": 1}, "person_1": "him.png"})
        + "\n"
        + json.dumps({"prompt": "a man <|image|>", "person_2": "him.png"})
        + "\n"
        + json.dumps({"prompt": "a man <|image|>", "person_1": "him.png", "seed": True})
        + "\n"
    )
    rows = read_batch(tmp_path / "b.jsonl")
    assert rows[0].settings["references"] == [str(refs[0])] and rows[0].settings["seed"] == 3
    assert "width must be a multiple of 8" in rows[1].error
    assert rows[2].error.startswith("line 4 is not JSON")
    assert rows[3].error == "line 5 is not a JSON object"
    assert "prompt must be text" in rows[4].error
    assert "filled from person_1 on, without gaps" in rows[5].error
    assert "seed must be a whole number" in rows[6].error


def test_batch_files_give_a_person_several_photos(tmp_path, refs):
    him, her = refs
    (tmp_path / "b.csv").write_text(
        "id,prompt,references\n"
        'two,a man <|image|> and a woman <|image|> dancing,"him.png,her.png;her.png"\n'
        'empty,a man <|image|> rowing,"him.png,"\n'
    )
    rows = read_batch(tmp_path / "b.csv")
    assert rows[0].settings["references"] == [[str(him), str(her)], str(her)]
    assert rows[0].photos == [him, her, her]  # every photo is uploaded / read
    assert "empty photo path" in rows[1].error
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"prompt": "a man <|image|> rowing", "references": [["him.png", "her.png"]]})
        + "\n"
        + json.dumps({"prompt": "a man <|image|> rowing", "person_1": "him.png,her.png"})
        + "\n"
    )
    rows = read_batch(tmp_path / "b.jsonl")
    assert [r.settings["references"] for r in rows] == [[[str(him), str(her)]]] * 2
    assert regroup([[1, 2], "x"], ["a", "b", "c"]) == [["a", "b"], "c"]


def test_photos_are_checked_before_any_work(tmp_path, refs):
    huge_png(tmp_path / "huge.png")  # beyond twice the limit: Pillow refuses to open it
    huge_png(tmp_path / "big.png", 10000, 10000)  # beyond the limit: Pillow only warns
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "b.csv").write_text(
        "id,prompt,references\n"
        "huge,a man <|image|>,huge.png\n"
        "big,a man <|image|>,big.png\n"
        "text,a man <|image|>,notes.png\n"
        "dir,a man <|image|>,folder.png\n"
        'many,a man <|image|>,"' + ",".join(["him.png"] * 17) + '"\n'
        "five,a <|image|> b <|image|> c <|image|> d <|image|> e <|image|>,"
        + ";".join(["him.png"] * 5)
        + "\n"
    )
    errors = {r.key: r.error for r in read_batch(tmp_path / "b.csv")}
    assert "'huge.png' has more than the 89 megapixels an image may have" in errors["huge"]
    assert "'big.png' is 10000x10000 pixels, more than the 89 megapixels" in errors["big"]
    assert "'notes.png' cannot be read as an image" in errors["text"]
    assert "'folder.png' is a folder" in errors["dir"]
    assert "17 photos of one person; at most 16" in errors["many"]
    assert "5 references; Face-diffuser takes at most 4" in errors["five"]


def test_unreadable_files_and_unknown_columns_stop_the_batch(tmp_path):
    (tmp_path / "b.csv").write_text("prompt,sede\na man <|image|>,1\n")
    with pytest.raises(InputError, match="unknown column\\(s\\) sede: known are id, prompt"):
        read_batch(tmp_path / "b.csv")
    (tmp_path / "latin.csv").write_bytes("prompt\nun caf\xe9 <|image|>\n".encode("latin-1"))
    with pytest.raises(InputError, match="is not UTF-8 text .*save it as UTF-8"):
        read_batch(tmp_path / "latin.csv")
    (tmp_path / "cell.csv").write_text('prompt,seed\n"' + "x" * 200_000 + '",1\n')
    with pytest.raises(InputError, match="is not CSV \\(field larger than field limit"):
        read_batch(tmp_path / "cell.csv")
    for empty, message in (("", "is empty: write a header row"), ("id,prompt\n", "has no rows")):
        (tmp_path / "e.csv").write_text(empty)
        with pytest.raises(InputError, match=message):
            read_batch(tmp_path / "e.csv")
    with pytest.raises(InputError, match="cannot be read \\(it is a folder\\)"):
        read_batch(tmp_path)
    with pytest.raises(InputError, match="cannot be read"):
        read_batch(tmp_path / "missing.csv")


def test_options_are_typed_and_in_range_naming_the_option(tmp_path, refs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = option_settings(
        {"prompt": "a man <|image|>", "references": ["him.png"], "cfg": "4", "seed": None},
        tmp_path,
    )
    assert settings == {"prompt": "a man <|image|>", "references": [str(refs[0])], "cfg": 4.0}
    bad = [
        ({"cfg": 31.0}, "--cfg 31 is out of range: Face-diffuser takes 0 to 30"),
        ({"cfg": float("nan")}, "--cfg: cfg must be a finite number"),
        ({"width": 100}, "--width: width must be a multiple of 8"),
        ({"width": 16392}, "--width 16392 is out of range: Face-diffuser takes 16 to 16384"),
        ({"batch_size": 0}, "--batch-size 0 is out of range"),
        ({"seed": 2**64}, "--seed 18446744073709551616 is out of range"),
        ({"references": ["nope.png"]}, "--ref: reference image 'nope.png' not found"),
        ({"prompt": "caf\udce9 <|image|>"}, "--prompt: prompt holds bytes that are not UTF-8"),
        ({"scene_end": 1.5}, "--scene-end 1.5 is out of range"),
    ]
    for values, message in bad:
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            option_settings(values, tmp_path)


def test_the_command_lines_row_and_required_inputs(tmp_path, refs):
    row = command_line_row({"prompt": "a man <|image|>", "references": [str(refs[0])]}, tmp_path)
    assert row == Row("0001", 0, {"prompt": "a man <|image|>", "references": [str(refs[0])]})
    with pytest.raises(InputError, match="has no <\\|image\\|> marker"):
        command_line_row({"prompt": "no marker"}, tmp_path)
    with pytest.raises(InputError, match="scene_end 0.7 is after fusion_end 0.5"):
        command_line_row({"scene_end": 0.7, "fusion_end": 0.5}, tmp_path)
    rows = [Row("a", 2, {"prompt": "x <|image|>"}), Row("b", 3, error="line 3: broken")]
    checked = require(rows, ("prompt", "references"), "give them")
    assert checked[0].error == "line 2: no references: give them"
    assert checked[1].error == "line 3: broken"  # its own problem is kept


def test_ranges_come_from_the_one_table():
    limits = {lim.setting: (lim.low, lim.high) for lim in pack_limits()}
    assert limits["cfg"] == (NUMBERS["cfg"]["min"], NUMBERS["cfg"]["max"])
    assert limits["width"] == (LATENT_SIZE["width"]["min"], LATENT_SIZE["width"]["max"])
    assert limits["batch_size"] == (1, LATENT_SIZE["batch_size"]["max"])
    check_limits({"steps": 1, "cfg": 0.0, "width": 16, "height": 16384}, pack_limits())
    with pytest.raises(InputError, match="steps 0 is out of range: Face-diffuser takes 1 to"):
        check_limits({"steps": 0}, pack_limits())


# =========================================================================== manifest


def test_manifest_entries_are_per_row_and_inputs(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.update("a-111111111111", id="a", digest="1111111111111111", status="done")
    manifest.update("a-222222222222", id="a", digest="2222222222222222", status="failed")
    again = Manifest(tmp_path)  # as a rerun reads it
    assert again.find("a", "1111111111111111")["status"] == "done"
    assert again.find("a", "3333333333333333") is None
    assert len(again.of_row("a")) == 2 and again.of_row("b") == []
    again.add_run({"started": "now"}, servers={"x": 1})
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["format"] == "facediffuser-batch/1" and data["servers"] == {"x": 1}


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    m = Manifest(tmp_path)
    m.update("a", status="done")
    before = (tmp_path / "manifest.json").read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(batch_manifest.os, "replace", broken_replace)
    with pytest.raises(OSError):
        m.update("b", status="done")
    assert (tmp_path / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


def test_a_foreign_or_broken_manifest_is_refused_not_overwritten(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "someone-else/2"}')
    with pytest.raises(InputError, match="not a facediffuser batch manifest: use another --out"):
        Manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(InputError, match="move it away"):
        Manifest(tmp_path)
    assert (tmp_path / "manifest.json").read_text() == "{broken"
