"""``facediffuser batch --ray`` on local Ray clusters these tests start themselves: the same
images as in-process, a worker killed mid-batch, a driver killed and restarted. Every row is
done once and the manifest stays whole.

Opt-in: they run where Ray is installed (``pip install -e ".[test,cluster]"``) and are
skipped elsewhere (CI installs ``.[test]`` only). Two to five minutes on two shared cores:
each cluster takes ~15 s to start and each worker loads the models.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from facediffuser_core.batching import Row
from facediffuser_core.cli.models import ModelPaths
from facediffuser_core.cluster import BatchOptions, LocalPool, Models, run_batch
from tests.batch_renderers import tracing

ray = pytest.importorskip("ray", reason='opt-in: pip install -e ".[test,cluster]" runs them')

from facediffuser_core.cluster.raypool import RayPool, connect  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL, STEPS = 64, 4
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def cluster():
    """A two-CPU cluster in this process; the workers can import tests/."""
    os.environ.update(QUIET)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), **QUIET}},
    )
    try:
        yield connect("auto")  # joins the cluster this process started
    finally:
        ray.shutdown()


@pytest.fixture()
def photos(tmp_path, tiny_set):
    for n, path in enumerate(tiny_set.references[:2], 1):
        shutil.copy(path, tmp_path / f"person_{n}.png")
    return tmp_path


def rows(folder: Path, n: int) -> list[Row]:
    people = [[str(folder / "person_1.png")], [str(folder / "person_2.png")]]
    return [
        Row(
            f"row{i}",
            i + 2,
            {
                "prompt": f"a {'woman' if i % 2 else 'man'} <|image|> in place {i}",
                "references": people[i % 2],
                "seed": 100 + i,
                "steps": STEPS,
                "width": SMALL,
                "height": SMALL,
            },
        )
        for i in range(n)
    ]


def models(tiny_set) -> Models:
    return Models(ModelPaths(False, tiny_set.sdm_bin, tiny_set.tdm_bin, tiny_set.tokenizer))


def outputs(out: Path) -> dict[str, bytes]:
    """Row id -> its one image, from a manifest whose rows are all done once."""
    data = json.loads((out / "manifest.json").read_text())
    records = list(data["entries"].values())
    assert len({r["id"] for r in records}) == len(records)  # one entry per row
    assert all(r["status"] == "done" for r in records), records
    return {r["id"]: (out / r["outputs"][0]).read_bytes() for r in records}


def test_ray_workers_render_the_same_images_as_this_process(cluster, photos, tiny_set, tmp_path):
    batch, quiet = rows(photos, 4), {"log": lambda _: None}
    spec = models(tiny_set)
    here = run_batch(batch, BatchOptions(tmp_path / "here", spec, progress=False), **quiet)
    pool = lambda: RayPool(cluster, spec)  # noqa: E731
    lines: list[str] = []
    there = run_batch(
        batch, BatchOptions(tmp_path / "ray", spec, progress=False), pool, log=lines.append
    )
    assert here.done == [r.key for r in batch] and sorted(there.done) == sorted(here.done)
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "here")
    workers = {line.split()[2] + " " + line.split()[3] for line in lines if line.startswith("done")}
    assert workers == {"worker 1", "worker 2"}  # both CPU slots worked


def test_a_worker_killed_mid_batch_is_restarted_and_no_row_is_lost(
    cluster, photos, tiny_set, tmp_path
):
    trace = tmp_path / "trace"
    batch = rows(photos, 6)
    spec = models(tiny_set)
    killed: list[int] = []

    def kill_the_worker_of_row3():
        for _ in range(600):
            started = list(trace.glob("start-row3-*"))
            if started:
                pid = int(started[0].name.split("-")[2])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    threading.Thread(target=kill_the_worker_of_row3, daemon=True).start()
    pool = lambda: RayPool(cluster, spec, renderer=tracing(str(trace), 0.5))  # noqa: E731
    result = run_batch(
        batch, BatchOptions(tmp_path / "out", spec, progress=False), pool, log=lambda _: None
    )
    assert killed, "row3 never started"
    assert sorted(result.done) == [r.key for r in batch] and not result.failed
    done = sorted(p.name.split("-")[1] for p in trace.glob("done-*"))
    assert done == [r.key for r in batch]  # every row finished exactly once
    starts = sorted(p.name.split("-")[1] for p in trace.glob("start-*"))
    assert starts.count("row3") == 2  # the killed row ran again on the restarted worker
    images = outputs(tmp_path / "out")
    calm = run_batch(
        batch,
        BatchOptions(tmp_path / "calm", spec, progress=False),
        lambda: LocalPool(spec, tracing(str(tmp_path / "calm-trace"), 0)),
        log=lambda _: None,
    )
    assert not calm.failed and outputs(tmp_path / "calm") == images


# =========================================================================== driver restart


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def head():
    """A cluster of its own (``ray start --head --block``) in its own temporary folder (so no
    other Ray on this machine sees it), stopped by its process group."""
    port = free_port()
    env = {**os.environ, **QUIET, "PYTHONPATH": str(ROOT)}
    ray_bin = Path(sys.executable).parent / "ray"
    temp = tempfile.mkdtemp(prefix="fdray-", dir="/tmp")  # short: Ray's sockets live there
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_driver_killed_mid_batch_resumes_and_renders_nothing_twice(
    head, photos, tiny_set, tmp_path
):
    (photos / "rows.jsonl").write_text(
        "".join(json.dumps({"id": r.key, **r.settings}) + "\n" for r in rows(photos, 6))
    )
    command = [
        sys.executable, "-m", "facediffuser_core", "batch", str(photos / "rows.jsonl"),
        "--sdm", str(tiny_set.sdm_bin), "--tdm", str(tiny_set.tdm_bin),
        "--tokenizer", str(tiny_set.tokenizer), "--out", str(tmp_path / "out"),
        "--ray", head, "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, **QUIET, "PYTHONPATH": str(ROOT)}
    manifest = tmp_path / "out" / "manifest.json"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(1800):  # killed as soon as two rows are recorded
            if manifest.is_file() and manifest.read_text().count('"status": "done"') >= 2:
                break
            assert driver.poll() is None, driver.communicate()
            time.sleep(0.05)
        driver.kill()
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    before = json.loads(manifest.read_text())["entries"]
    finished = {n: r["finished_at"] for n, r in before.items() if r["status"] == "done"}
    assert 2 <= len(finished) < 6
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"6 item(s): {6 - len(finished)} done, {len(finished)} already done" in again.stdout
    after = json.loads(manifest.read_text())["entries"]
    assert len(after) == 6 and all(r["status"] == "done" for r in after.values())
    assert {n: after[n]["finished_at"] for n in finished} == finished  # not rendered again
    here = run_batch(
        rows(photos, 6), BatchOptions(tmp_path / "here", models(tiny_set), progress=False),
        log=lambda _: None,
    )  # fmt: skip
    assert not here.failed and outputs(tmp_path / "out") == outputs(tmp_path / "here")
