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


def test_executors_load_the_promoted_model_through_a_relative_lakehouse(spark, standalone, tmp_path):
    """The lakehouse is given relative to the submitting directory, and registry paths are
    relative to the lakehouse: executors, in their own work dirs, must still find the model.
    A freshly initialised model is registered by hand (training is not what this checks)."""
    from deltalake import DeltaTable

    from recs.config import load_config
    from recs.features.spec import load_spec
    from recs.model.artifacts import save_model
    from recs.model.dlrm import build_model
    from recs.model.registry import GateDecision, record_model
    from recs.sample_data import generate

    url, _, _ = standalone
    generate(tmp_path, users=60, items=30, days=1, start=DAY, seed=17)
    env = submit_env(url, RECS_SCORE__K="10", RECS_SCORE__ADS_PER_USER="3")
    args = ["--date", str(DAY), "--lakehouse", "lh", "--raw", "raw"]
    for step in ("ingest", "features"):
        done = submit([step, *args], env, cwd=tmp_path)
        assert done.returncode == 0, (step, done.stdout[-3000:])
    cfg = load_config(lakehouse=str(tmp_path / "lh"), environ={})
    spec = load_spec()
    save_model(
        build_model(spec, cfg.train.bottom_mlp, cfg.train.top_mlp), tmp_path / "lh" / "models" / "by-hand"
    )
    record_model(
        spark,
        cfg,
        model_version="by-hand",
        train_start=DAY,
        train_end=DAY,
        validation_date=DAY,
        metrics={"auc": 0.5},
        baseline_auc=None,
        spec_hash=spec.spec_hash,
        artifact_path="models/by-hand",
        decision=GateDecision("promoted", "registered by the test"),
        run_date=DAY,
    )

    done = submit(["score", *args], env, cwd=tmp_path)

    assert done.returncode == 0, done.stdout[-3000:]
    recs = DeltaTable(str(tmp_path / "lh" / "recommendations")).to_pandas()
    assert len(recs) > 0 and set(recs.model_version) == {"by-hand"}
    assert recs.score.between(0, 1).all() and recs.score.nunique() > 1
