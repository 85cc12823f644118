"""The cluster wrapper (dry runs for each master kind), its defaults, and the executor wait."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "deploy" / "spark-submit.sh"


def wrapper(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The wrapper with a clean environment: no RECS_* overrides, this interpreter's env."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RECS_", "DEPLOY_", "SPARK_"))}
    base |= {"DRY_RUN": "1", "DEPLOY_VENV": sys.prefix, "DEPLOY_SHIP_ENV": "0"} | env
    return subprocess.run(
        ["bash", str(WRAPPER), *args], env=base, capture_output=True, text=True, timeout=120
    )


def option(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


@pytest.mark.parametrize(
    "master", ["yarn", "k8s://https://api.example:443", "spark://127.0.0.1:7077", "local[2]"]
)
def test_a_dry_run_names_the_application_and_adds_the_matching_delta_jars(master):
    import shlex

    import pyspark

    from recs.session import delta_package

    done = wrapper("score", "--date", "2026-01-02", "--lakehouse", "/data/lh", SPARK_MASTER=master)

    assert done.returncode == 0, done.stderr
    cmd = shlex.split(done.stdout)
    assert option(cmd, "--master") == master and option(cmd, "--deploy-mode") == "client"
    assert option(cmd, "--name") == "recs-score-2026-01-02"
    assert option(cmd, "--packages") == delta_package()
    excluded = option(cmd, "--exclude-packages").split(",")
    assert "org.apache.hadoop:hadoop-client-runtime" in excluded
    # Everything excluded is in Spark's own jars/ folder.
    shipped = {p.name for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    for coordinate in excluded:
        artifact = coordinate.split(":")[1]
        assert any(re.fullmatch(rf"{re.escape(artifact)}-[0-9].*\.jar", n) for n in shipped), artifact
    assert cmd[-4:] == ["--date", "2026-01-02", "--lakehouse", "/data/lh"]
    assert cmd[-5].endswith("jobs/score.py")


def test_cluster_mode_on_a_standalone_master_is_refused_before_submitting():
    done = wrapper(
        "nightly", "--date", "2026-01-02", SPARK_MASTER="spark://127.0.0.1:7077", DEPLOY_MODE="cluster"
    )

    assert done.returncode == 2 and done.stdout == ""
    assert "standalone" in done.stderr and "DEPLOY_MODE=client" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_prefetched_jars_are_shipped_with_jars_instead_of_resolved(tmp_path):
    import shlex

    for name in ("delta-spark_4.2_2.13-4.4.0.jar", "delta-storage-4.4.0.jar"):
        (tmp_path / name).write_bytes(b"")

    done = wrapper("ingest", "--date", "2026-01-02", DEPLOY_JARS_DIR=str(tmp_path))

    cmd = shlex.split(done.stdout)
    assert done.returncode == 0, done.stderr
    assert "--packages" not in cmd
    assert sorted(Path(j).name for j in option(cmd, "--jars").split(",")) == sorted(
        p.name for p in tmp_path.iterdir()
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = wrapper("ingest", "--date", "2026-01-02", DEPLOY_JARS_DIR=str(empty))
    assert refused.returncode == 2 and "holds no .jar files" in refused.stderr


def shipped_archive(done: subprocess.CompletedProcess) -> str | None:
    import shlex

    assert done.returncode == 0, done.stderr
    archives = option(shlex.split(done.stdout), "--archives")
    return archives and archives.removesuffix("#environment")


def test_only_steps_whose_executors_run_python_ship_the_environment(tmp_path):
    """Ranking (score) and training ranks run Python on executors; the other steps are JVM
    work there, so a backfill of ingest + features unpacks no archive on any node."""
    cache = {"DEPLOY_SHIP_ENV": "1", "SPARK_MASTER": "yarn", "DEPLOY_ENV_CACHE": str(tmp_path)}
    args = ("--date", "2026-01-02", "--lakehouse", "/data/lh")

    for step in ("score", "train", "nightly"):
        assert shipped_archive(wrapper(step, *args, **cache)), step
    for step in ("ingest", "features", "evaluate"):
        done = wrapper(step, *args, **cache)
        assert shipped_archive(done) is None, step
        assert f"spark.pyspark.driver.python={sys.prefix}/bin/python" in done.stdout
        assert "spark.pyspark.python=" not in done.stdout  # never started on the executors
    # A driver on the cluster (cluster mode) needs the environment whatever the step.
    assert shipped_archive(wrapper("ingest", *args, **cache, DEPLOY_MODE="cluster"))


def test_an_archive_already_in_the_store_is_reused_and_a_new_one_is_uploaded(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "store"
    env = {"DEPLOY_SHIP_ENV": "1", "SPARK_MASTER": "yarn", "DEPLOY_ENV_CACHE": str(cache)}
    args = ("score", "--date", "2026-01-02", "--lakehouse", "/data/lh")
    local = Path(shipped_archive(wrapper(*args, **env)))
    assert local.parent == cache and local.name.startswith("recs-env-")

    # Not in the store yet: a dry run says it would upload, and names the store's copy.
    done = wrapper(*args, **env, DEPLOY_ENV_STORE=str(store))
    assert shipped_archive(done) == str(store / local.name)
    assert "uploads" in done.stderr and not store.exists()

    # In the store: used as it is, nothing packed or uploaded.
    store.mkdir()
    (store / local.name).write_bytes(b"an archive of this build")
    done = wrapper(*args, **env, DEPLOY_ENV_STORE=f"file://{store}")
    assert shipped_archive(done) == f"file://{store}/{local.name}"
    assert "reusing" in done.stderr and "pack" not in done.stderr

    # An archive of another build is not this build's.
    (store / local.name).rename(store / "recs-env-0.0.0-0000000000000000.tar.gz")
    assert shipped_archive(wrapper(*args, **env, DEPLOY_ENV_STORE=str(store))) == str(store / local.name)


def test_the_default_store_is_beside_a_remote_lakehouse_and_an_unreachable_one_is_said(tmp_path):
    env = {"DEPLOY_SHIP_ENV": "1", "SPARK_MASTER": "yarn", "DEPLOY_ENV_CACHE": str(tmp_path)}
    env["PATH"] = "/usr/bin:/bin"  # no hadoop command here
    args = ("score", "--date", "2026-01-02", "--lakehouse", "hdfs://nn:8020/recs/")

    # The default store cannot be reached without hadoop: a note, and the local archive ships.
    done = wrapper(*args, **env)
    assert "hdfs://nn:8020/recs/_deploy/envs" in done.stderr and "no hadoop command" in done.stderr
    assert Path(shipped_archive(done)).parent == tmp_path

    # A store the user named that cannot be reached fails in one line naming the variable.
    refused = wrapper(*args, **env, DEPLOY_ENV_STORE="s3a://bucket/envs")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (
        "spark-submit.sh: DEPLOY_ENV_STORE=s3a://bucket/envs: no hadoop command to reach it "
        "(set HADOOP_HOME or put hadoop on PATH)"
    )
    # none: the local archive, without a word about stores.
    done = wrapper(*args, **env, DEPLOY_ENV_STORE="none")
    assert Path(shipped_archive(done)).parent == tmp_path and "env store" not in done.stderr


def test_every_array_expansion_is_safe_under_set_u_on_old_bash():
    """bash before 4.4 treats "${a[@]}" of an empty array as unbound under set -u."""
    text = WRAPPER.read_text()
    bare = re.findall(r'(?<!\+)"\$\{(\w+)\[@\]\}"', text)
    guarded = set(re.findall(r'\$\{(\w+)\[@\]\+"\$\{\1\[@\]\}"\}', text))
    # found is expanded only after a check that it is not empty; cmd always holds the command.
    assert set(bare) - guarded <= {"found", "cmd"}, set(bare) - guarded


def size_of(value: str) -> float:
    """A Spark memory setting in GiB."""
    number, unit = re.fullmatch(r"(\d+)([kmgt]?)b?", value.lower()).groups()
    return int(number) * {"k": 2**-20, "m": 2**-10, "g": 1, "t": 1024, "": 2**-30}[unit]


def test_the_default_executor_and_driver_fit_a_2_core_6_gb_node():
    conf = {}
    for line in (ROOT / "deploy" / "spark-defaults.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split(None, 1)
            conf[key] = value.strip()

    assert int(conf["spark.executor.cores"]) <= 2
    assert size_of(conf["spark.executor.memory"]) + size_of(conf["spark.executor.memoryOverhead"]) <= 6
    assert size_of(conf["spark.driver.memory"]) + size_of(conf["spark.driver.memoryOverhead"]) <= 6
    assert conf["spark.sql.adaptive.coalescePartitions.parallelismFirst"] == "false"


def test_an_application_without_executors_fails_naming_the_sizes_it_asked_for(spark):
    """A local session holds the driver only: exactly what a cluster that cannot place an
    executor looks like to the driver."""
    from pyspark import SparkConf

    from recs.errors import ClusterResourcesError
    from recs.session import executors_expected, wait_for_executors

    with pytest.raises(ClusterResourcesError, match=r"within 0\.2 s.*spark\.executor\.cores"):
        wait_for_executors(spark, 0.2, poll_s=0.05)

    def conf(**kv):
        c = SparkConf(loadDefaults=False)
        for k, v in kv.items():
            c.set(k.replace("_", "."), v)
        return c

    assert not executors_expected(conf(spark_master="local[2]"))
    assert executors_expected(conf(spark_master="spark://h:7077"))
    dynamic = {"spark_master": "yarn", "spark_dynamicAllocation_enabled": "true"}
    assert not executors_expected(conf(**dynamic))
    assert executors_expected(conf(**dynamic, spark_dynamicAllocation_minExecutors="1"))
