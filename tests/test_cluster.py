"""A night on a real standalone cluster (one master, one 2-core / 6 GB worker on loopback),
submitted through deploy/spark-submit.sh with its default settings.

Run with ``pytest -m cluster`` (CI runs it as its own step): it starts two JVMs of its own.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import pipeline_config

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 2, 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log.name} exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {port}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """(master URL, worker work dir, master log); both stopped by their process ids at the end."""
    import pyspark

    home = Path(pyspark.__file__).parent
    tmp = tmp_path_factory.mktemp("cluster")
    port = free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    logs, procs = [], []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = tmp / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(home / "bin" / "spark-class"), *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        logs.append(log)
        procs.append(proc)
        return proc

    work = tmp / "work"
    try:
        master = start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port()),
        )  # fmt: skip
        wait_for_port(port, master, logs[0])
        url = f"spark://127.0.0.1:{port}"
        start(
            "worker",
            "org.apache.spark.deploy.worker.Worker",
            url,
            "--host", "127.0.0.1", "--cores", "2", "--memory", "6g",
            "--webui-port", str(free_port()), "--work-dir", str(work),
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while "Successfully registered with master" not in logs[1].read_text():
            assert time.monotonic() < deadline, logs[1].read_text()[-2000:]
            time.sleep(0.5)
        yield url, work, logs[0]
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def submit_env(url: str, **extra: str) -> dict[str, str]:
    """The wrapper's environment: this machine's Python on the worker, nothing shipped."""
    import pyspark

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECS_", "DEPLOY_", "SPARK_"))}
    return env | {
        "SPARK_MASTER": url,
        "SPARK_SUBMIT": str(Path(pyspark.__file__).parent / "bin" / "spark-submit"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "DEPLOY_SHIP_ENV": "0",  # the worker runs on this machine, with this environment
        "DEPLOY_PYTHON": sys.executable,
        "DEPLOY_VENV": sys.prefix,
        **extra,
    }


def submit(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "deploy" / "spark-submit.sh"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def canonical(df) -> list[tuple]:
    """Rows in a fixed order, floats to 9 significant digits (sums may add up in another order)."""

    def value(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if isinstance(v, float):
            return float(f"{v:.9g}")
        if hasattr(v, "tolist"):
            return tuple(v.tolist())
        return v

    columns = sorted(df.columns)
    return sorted((tuple(value(v) for v in row) for row in df[columns].itertuples(index=False)), key=repr)


def test_a_night_on_a_standalone_cluster_with_the_default_settings_equals_local_mode(
    spark, standalone, tmp_path
):
    from deltalake import DeltaTable

    from recs.pipeline import nightly
    from recs.sample_data import generate

    url, work, master_log = standalone
    generate(tmp_path, users=120, items=60, days=1, start=DAY, seed=11)
    cluster_lh, local_lh = tmp_path / "cluster-lakehouse", tmp_path / "local-lakehouse"
    # The suite's small-data settings, as the local run below uses them.
    env = submit_env(url, RECS_TRAIN__WINDOW_DAYS="3", RECS_SCORE__K="20", RECS_SCORE__ADS_PER_USER="5")
    # Relative paths, as a platform engineer types them: the driver resolves them once, the
    # executors (in their own work dirs) get absolute ones.
    args = ["nightly", "--date", str(DAY), "--lakehouse", cluster_lh.name, "--raw", "raw"]

    started = time.monotonic()
    done = submit(args, env, cwd=tmp_path)
    cluster_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-4000:]

    # The application kept the wrapper's name; the executor on the worker ran the night's tasks
    # (its log is in the application's work dir).
    apps = [p for p in work.iterdir() if p.name.startswith("app-")]
    assert len(apps) == 1
    assert f"Registering app recs-nightly-{DAY}" in master_log.read_text()
    executor_logs = "".join(p.read_text(errors="replace") for p in apps[0].glob("*/stderr"))
    assert executor_logs.count("Finished task") > 10

    cfg = pipeline_config(local_lh, tmp_path / "raw")
    started = time.monotonic()
    assert nightly(spark, cfg, DAY).ok
    local_s = time.monotonic() - started
    print(f"night of {DAY}: cluster {cluster_s:.0f} s (one application), local {local_s:.0f} s")

    tables = ["events", "user_features", "item_features", "candidate_pool", "recommendations"]
    for name in [*tables, "ad_candidates", "audiences", "similar_items"]:
        on_cluster = DeltaTable(str(cluster_lh / name)).to_pandas()
        local = DeltaTable(str(local_lh / name)).to_pandas()
        assert len(on_cluster) > 0, name
        assert canonical(on_cluster) == canonical(local), name


def test_executors_too_big_for_every_node_fail_the_step_with_the_sizes_instead_of_hanging(
    standalone, tmp_path
):
    """7 GB executors on a 6 GB worker: Spark alone would wait forever for resources."""
    from recs.sample_data import generate

    url, _, _ = standalone
    generate(tmp_path, users=20, items=10, days=1, start=DAY, seed=3)
    sizes = "--conf spark.executor.memory=7g --conf spark.recs.executorWaitTimeout=20s"
    env = submit_env(url, DEPLOY_SUBMIT_ARGS=sizes)
    args = ["ingest", "--date", str(DAY), "--lakehouse", str(tmp_path / "lh"), "--raw", str(tmp_path / "raw")]

    started = time.monotonic()
    done = submit(args, env)

    assert done.returncode == 1, done.stderr[-3000:]
    assert time.monotonic() - started < 240
    said = done.stdout + done.stderr  # spark-submit passes the driver's stderr on as its stdout
    assert "no executor registered" in said and "spark.executor.memory=7g" in said
    assert not (tmp_path / "lh" / "events").exists()


def packed_env_of_this_interpreter(dest: Path) -> None:
    """An env archive as venv-pack lays it out (bin/python at its root) whose Python is this
    interpreter: the worker runs on this machine, so that is all its executors need."""
    import io
    import tarfile

    script = f'#!/bin/sh\nexec "{sys.executable}" "$@"\n'.encode()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        entry = tarfile.TarInfo("bin/python")
        entry.size, entry.mode = len(script), 0o755
        tar.addfile(entry, io.BytesIO(script))


def test_a_model_trained_on_the_driver_ranks_on_executors_from_a_shipped_environment(standalone, tmp_path):
    """Two days, submitted from a working directory with a relative lakehouse: night 2 trains
    on the driver and ranks on the executors, which load the model through registry paths
    relative to the lakehouse and run Python from the archive shipped through a store; a
    rerun of the score step reuses the stored archive and writes the same rows."""
    import shlex

    from deltalake import DeltaTable

    from recs.sample_data import generate

    url, work, _ = standalone
    second = DAY + dt.timedelta(days=1)
    generate(tmp_path, users=120, items=60, days=2, start=DAY, seed=11)
    cache, store = tmp_path / "env-cache", tmp_path / "env-store"
    # A floor of 0 promotes whatever one day of 120 users teaches (the gate has its own tests):
    # this checks where the model is trained and how executors reach it.
    overrides = {"RECS_TRAIN__WINDOW_DAYS": "3", "RECS_TRAIN__EPOCHS": "2", "RECS_TRAIN__AUC_FLOOR": "0"}
    env = submit_env(
        url, **overrides, RECS_SCORE__K="10", RECS_SCORE__ADS_PER_USER="3",
        DEPLOY_SHIP_ENV="1", DEPLOY_ENV_CACHE=str(cache), DEPLOY_ENV_STORE=str(store),
    )  # fmt: skip
    args = ["--lakehouse", "lh", "--raw", "raw"]
    # The archive the wrapper would pack for this build, made by hand (packing needs a
    # non-editable install); the dry run names it.
    dry = submit(["score", "--date", str(second), *args], env | {"DRY_RUN": "1"}, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    archive = Path(shlex.split(dry.stdout)[shlex.split(dry.stdout).index("--archives") + 1].split("#")[0])
    packed_env_of_this_interpreter(cache / archive.name)

    def apps() -> set[Path]:
        return {p for p in work.iterdir() if p.name.startswith("app-")}

    for step in ("ingest", "features"):  # night 1 without its model steps: nothing to train on yet
        before = apps()
        done = submit([step, "--date", str(DAY), *args], env, cwd=tmp_path)
        assert done.returncode == 0, (step, done.stdout[-3000:])
        # No Python runs on this step's executors, so nothing was shipped to them.
        (app,) = apps() - before
        assert not list(app.glob("*/environment")) and not list(app.glob("*/*.tar.gz"))
    before = apps()
    done = submit(["nightly", "--date", str(second), *args], env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"uploaded {cache / archive.name} to {store / archive.name}" in done.stderr

    lh = tmp_path / "lh"
    registry = DeltaTable(str(lh / "model_registry")).to_pandas()
    trained = registry[registry.status == "promoted"]
    assert len(trained) == 1 and trained.artifact_path.iloc[0].startswith("models/")
    version = trained.model_version.iloc[0]
    recs = DeltaTable(str(lh / "recommendations")).to_pandas()
    assert len(recs) > 0 and set(recs.model_version) == {version}
    assert recs.score.between(0, 1).all() and recs.score.nunique() > 1
    # The executors ranked with the Python of the unpacked archive.
    (night_app,) = apps() - before
    assert list(night_app.glob("*/environment/bin/python"))

    again = submit(["score", "--date", str(second), *args], env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"reusing {store / archive.name}" in again.stderr and "uploaded" not in again.stderr
    rerun = DeltaTable(str(lh / "recommendations")).to_pandas()
    assert canonical(rerun) == canonical(recs)
