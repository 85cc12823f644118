"""Recommendation quality: recs against peers and baselines on logs from an independent simulator.

For each setting of ``quality_sim.py`` and each seed this benchmark

1. simulates raw event logs and catalog snapshots into a scratch directory,
2. runs ``recs backfill`` over every day but the last, through the CLI in a subprocess, as a
   user would (so the last scored date D is the next-to-last simulated day); ``--nights last``
   (the ``--quick`` default) runs the history nights with ingest and features only and the
   full pipeline on D alone, which is several times faster,
3. judges the lists served on D+1 (``rec_date = D``) against what users did on D+1: the items
   they viewed, clicked, carted or bought, less the items they had bought on or before D,
4. builds the other systems' top-50 lists from the same history (days up to D) and judges them
   on the same users: every user who has such items on D+1 and was seen on or before D.

Systems:

* ``recs``: the ``recommendations`` table for D (the trained DLRM, or the fallback order when
  no model was promoted; the model version is printed);
* ``candidate order``: recs' own candidate pool for D ordered by its sources, no model
  (the stored ``candidate_pool`` -> ``fallback_scores`` -> ``top_k``, as ``recs evaluate`` does);
* ``recent items``: the user's own items (viewed, clicked, carted), newest first;
* ``co-visitation``: item-to-item co-occurrence in users' time-ordered histories, scored from
  the user's ten most recent items;
* ``popularity (7d)``: distinct users per item over D-6..D;
* ``LightFM``: WARP loss with category and brand item features, on all interactions up to D.

Every list keeps in-stock items of D's catalog and drops what the user had bought by D. The
metrics are recall, NDCG and hit rate at 10 and 50, means over users with 95% bootstrap
intervals over users; ``pool recall`` is the share of a user's D+1 items that any of recs'
candidate sources proposed, the ceiling of any ranking of that pool.

Usage::

    python benchmarks/bench_quality.py --quick                  # 2 settings, 1 seed, small worlds
    python benchmarks/bench_quality.py --out quality.json       # 4 settings x 2 seeds, every night
    python benchmarks/bench_quality.py --quick --settings new_items --recs-ref HEAD

``--recs-ref REF`` installs recs as committed at REF into the work directory and runs that
(CLI subprocesses, Spark workers and this process alike) instead of the working tree.
On a 2-core machine one quick setting takes about 10-14 minutes, nearly all of it in
``recs backfill`` (Spark start-up and per-night steps); the full run takes hours.

LightFM is in the ``bench`` extra; it needs build flags (see pyproject.toml)::

    pip install setuptools wheel cython numpy scipy
    pip install --no-build-isolation --no-use-pep517 lightfm

Without LightFM the benchmark runs and says that the LightFM row is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads must sleep, not spin, on a shared machine (torch runs in the subprocess).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from quality_sim import SETTINGS, Setting, SimSummary, generate, read_catalog, read_events  # noqa: E402

K = 50
KS = (10, 50)
METRICS = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg", "hit")]
RELEVANT = ("view", "click", "add_to_cart", "purchase")
SYSTEMS = ("recs", "candidate order", "recent items", "co-visitation", "popularity (7d)", "LightFM")
# Spark on a small machine and small data: fewer shuffle partitions than the default 8.
CONFIG_TOML = """\
[spark]
shuffle_partitions = 2
"""


# ---------------------------------------------------------------- running recs


@dataclasses.dataclass
class Backfill:
    command: list[str]
    returncode: int
    seconds: float
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])


def run_backfill(
    root: Path, config: Path, start: dt.date, end: dt.date, timeout: float, steps: tuple[str, ...] = ()
) -> Backfill:
    cmd = [
        sys.executable,
        "-m",
        "recs",
        "--config",
        str(config),
        "--lakehouse",
        str(root / "lakehouse"),
        "--raw",
        str(root / "raw"),
        "backfill",
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
    ]
    for step in steps:
        cmd += ["--steps", step]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECS_")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["COLUMNS"] = "120"  # rich's log lines, readable in the log file
    log = root / f"backfill-{start}-{end}.log"
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        try:
            rc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n[bench] killed after {timeout:.0f}s\n")
            rc = -9
    return Backfill(cmd, rc, time.perf_counter() - t0, log)


REPO = Path(__file__).resolve().parent.parent


def install_ref(ref: str, work: Path) -> Path:
    """Install recs as committed at ``ref`` into a private directory and put it first on the path
    of this process and of every ``recs`` subprocess (and so of Spark's Python workers).

    The working tree may be mid-edit; benchmarking a commit keeps the figures tied to one version.
    """
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    base = work / f"recs-{commit[:12]}"
    site = base / "site"
    if not (site / "recs" / "__init__.py").exists():
        src = base / "src"
        shutil.rmtree(base, ignore_errors=True)
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        subprocess.run([*pip, "--target", str(site), str(src)], check=True)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    os.environ["BENCH_QUALITY_RECS_COMMIT"] = commit
    return site


def code_state() -> dict[str, str]:
    """What ran: the commit installed by ``--recs-ref``, or the working tree's commit and a
    digest of its uncommitted changes to recs/ and schemas/."""
    if os.environ.get("BENCH_QUALITY_RECS_COMMIT"):
        return {"commit": os.environ["BENCH_QUALITY_RECS_COMMIT"][:12], "source": "--recs-ref install"}

    def git(*a: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True, check=False)
        return done.stdout

    diff = git("diff", "HEAD", "--", "recs", "schemas")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else "clean",
        "uncommitted_files": ", ".join(git("diff", "HEAD", "--name-only", "--", "recs", "schemas").split()),
        "source": "working tree (editable install)",
    }


def backfills(root: Path, config: Path, days: list[dt.date], nights: str, timeout: float) -> list[Backfill]:
    """``all``: one ``recs backfill`` over every night up to D, every step each night.
    ``last``: the history nights with ingest and features only (what ``recs demo`` does), then
    the full night D; D's model sees the same training examples, only yesterday's incumbent
    model (which the promotion gate compares against) is missing."""
    first, scored = days[0], days[-2]
    if nights == "all" or first == scored:
        return [run_backfill(root, config, first, scored, timeout)]
    history = run_backfill(
        root, config, first, scored - dt.timedelta(days=1), timeout, steps=("ingest", "features")
    )
    if history.returncode != 0:
        return [history]
    return [history, run_backfill(root, config, scored, scored, timeout)]


# ---------------------------------------------------------------- history and truth


@dataclasses.dataclass
class World:
    """What the judged systems may know (days up to D) and what happened on D+1."""

    history: pd.DataFrame  # interactions up to D: user_id, item_id, event_type, event_time, day
    purchased: pd.DataFrame  # (user_id, item_id) bought on or before D
    eligible: np.ndarray  # item ids in D's catalog and in stock
    item_meta: pd.DataFrame  # item_id, category_id, brand (D's catalog)
    truth: pd.DataFrame  # (user_id, item_id) on D+1, bought-by-D removed, known users only
    new_users_with_truth: int  # users active on D+1 with nothing before: not judged


def load_world(raw: Path, days: list[dt.date]) -> World:
    *past, judged = days
    frames = []
    for i, day in enumerate(past):
        ev = read_events(raw, day)
        ev = ev[ev["event_type"].isin(RELEVANT)][["user_id", "item_id", "event_type", "event_time"]]
        frames.append(ev.assign(day=i))
    history = pd.concat(frames, ignore_index=True)
    purchased = history.loc[history["event_type"] == "purchase", ["user_id", "item_id"]].drop_duplicates()
    catalog = read_catalog(raw, past[-1])
    eligible = catalog.loc[catalog["in_stock"], "item_id"].to_numpy()

    nxt = read_events(raw, judged)
    rel = nxt[nxt["event_type"].isin(RELEVANT)][["user_id", "item_id"]].drop_duplicates()
    rel = rel.merge(purchased, on=["user_id", "item_id"], how="left", indicator=True)
    rel = rel[rel["_merge"] == "left_only"].drop(columns="_merge")
    known = set(history["user_id"].unique())
    is_known = rel["user_id"].isin(known)
    return World(
        history=history,
        purchased=purchased,
        eligible=eligible,
        item_meta=catalog[["item_id", "category_id", "brand"]],
        truth=rel[is_known].reset_index(drop=True),
        new_users_with_truth=int(rel.loc[~is_known, "user_id"].nunique()),
    )


def finish(scored: pd.DataFrame, world: World, users: np.ndarray, k: int = K) -> pd.DataFrame:
    """(user_id, item_id, score) -> the top-k (user_id, item_id, rank) among eligible items
    the user had not bought, for ``users`` only."""
    df = scored[scored["user_id"].isin(users) & scored["item_id"].isin(world.eligible)]
    df = df.merge(world.purchased, on=["user_id", "item_id"], how="left", indicator=True)
    df = df[df["_merge"] == "left_only"].drop(columns="_merge")
    df = df.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    df = df.drop_duplicates(["user_id", "item_id"])
    df["rank"] = df.groupby("user_id").cumcount() + 1
    return df.loc[df["rank"] <= k, ["user_id", "item_id", "rank"]].reset_index(drop=True)


# ---------------------------------------------------------------- baselines written here


def recent_items(world: World, users: np.ndarray) -> pd.DataFrame:
    h = world.history[world.history["event_type"] != "purchase"]
    last = h.groupby(["user_id", "item_id"], as_index=False)["event_time"].max()
    last["score"] = last["event_time"].astype("int64") / 1e9
    return finish(last, world, users)


def popularity(world: World, users: np.ndarray, days: int = 7) -> pd.DataFrame:
    last_day = world.history["day"].max()
    h = world.history[world.history["day"] > last_day - days]
    counts = h.groupby("item_id")["user_id"].nunique().rename("score").reset_index()
    counts = counts[counts["item_id"].isin(world.eligible)].nlargest(4 * K, "score")
    grid = pd.DataFrame({"user_id": np.repeat(users, len(counts))})
    grid["item_id"] = np.tile(counts["item_id"].to_numpy(), len(users))
    grid["score"] = np.tile(counts["score"].to_numpy(dtype=float), len(users))
    return finish(grid, world, users)


def covisitation(
    world: World, users: np.ndarray, window: int = 3, neighbours: int = 50, recent: int = 10
) -> pd.DataFrame:
    """Items that followed or preceded each other within ``window`` steps of a user's history."""
    h = world.history.sort_values(["user_id", "event_time", "item_id"], kind="stable")
    # One step per distinct item in a row: view -> cart -> purchase of an item is one step.
    step = h[(h["user_id"] != h["user_id"].shift()) | (h["item_id"] != h["item_id"].shift())]
    user = step["user_id"].to_numpy()
    item = step["item_id"].to_numpy()
    parts = []
    for gap in range(1, window + 1):
        same = user[gap:] == user[:-gap]
        a, b = item[:-gap][same], item[gap:][same]
        differ = a != b
        w = np.full(differ.sum(), 1.0 / gap)
        parts.append(pd.DataFrame({"item_id": a[differ], "neighbour": b[differ], "w": w}))
        parts.append(pd.DataFrame({"item_id": b[differ], "neighbour": a[differ], "w": w}))
    pairs = pd.concat(parts).groupby(["item_id", "neighbour"], as_index=False)["w"].sum()
    # Normalise by the item's total weight, so heavy items do not drown everything.
    pairs["w"] /= pairs.groupby("item_id")["w"].transform("sum")
    pairs = pairs.sort_values(["item_id", "w"], ascending=[True, False])
    pairs = pairs[pairs.groupby("item_id").cumcount() < neighbours]

    mine = h[h["user_id"].isin(users)].groupby(["user_id", "item_id"], as_index=False)["event_time"].max()
    mine = mine.sort_values(["user_id", "event_time"], ascending=[True, False])
    mine["pos"] = mine.groupby("user_id").cumcount()
    mine = mine[mine["pos"] < recent]
    scored = mine.merge(pairs, on="item_id")
    scored["score"] = scored["w"] / (scored["pos"] + 1.0)
    scored = scored.groupby(["user_id", "neighbour"], as_index=False)["score"].sum()
    return finish(scored.rename(columns={"neighbour": "item_id"}), world, users)


def lightfm_lists(world: World, users: np.ndarray, seed: int, epochs: int) -> tuple[pd.DataFrame, float]:
    """WARP matrix factorisation with category and brand features; returns (lists, fit seconds)."""
    import scipy.sparse as sp
    from lightfm import LightFM

    t0 = time.perf_counter()
    items = np.union1d(world.item_meta["item_id"].to_numpy(), world.history["item_id"].unique())
    all_users = np.union1d(world.history["user_id"].unique(), users)
    u_index = pd.Index(all_users)
    i_index = pd.Index(items)
    pairs = world.history.groupby(["user_id", "item_id"]).size().reset_index(name="n")
    rows, cols = u_index.get_indexer(pairs["user_id"]), i_index.get_indexer(pairs["item_id"])
    interactions = sp.coo_matrix(
        (np.ones(len(pairs), np.float32), (rows, cols)), shape=(len(u_index), len(i_index))
    )
    # Item features: the item itself, its category and its brand, each row summing to 1.
    meta = world.item_meta.set_index("item_id").reindex(items)
    cat_index = pd.Index(meta["category_id"].fillna("?").unique())
    brand_index = pd.Index(meta["brand"].fillna("?").unique())
    n_i = len(items)
    feat_rows = np.concatenate([np.arange(n_i)] * 3)
    feat_cols = np.concatenate(
        [
            np.arange(n_i),
            n_i + cat_index.get_indexer(meta["category_id"].fillna("?")),
            n_i + len(cat_index) + brand_index.get_indexer(meta["brand"].fillna("?")),
        ]
    )
    features = sp.csr_matrix(
        (np.full(len(feat_rows), 1.0 / 3, np.float32), (feat_rows, feat_cols)),
        shape=(n_i, n_i + len(cat_index) + len(brand_index)),
    )
    model = LightFM(loss="warp", no_components=32, learning_rate=0.05, random_state=seed)
    # One thread: LightFM's parallel SGD is lock-free, so more threads would not repeat exactly.
    model.fit(interactions.tocsr(), item_features=features, epochs=epochs, num_threads=1)

    eligible = np.flatnonzero(np.isin(items, world.eligible))
    u_rows = u_index.get_indexer(users)
    frames = []
    for lo in range(0, len(users), 500):
        chunk = u_rows[lo : lo + 500]
        uu = np.repeat(chunk, len(eligible))
        ii = np.tile(eligible, len(chunk))
        s = model.predict(uu, ii, item_features=features, num_threads=2).reshape(len(chunk), -1)
        # Keep more than K per user: finish() still drops bought items.
        keep = min(K * 3, len(eligible))
        top = np.argpartition(-s, keep - 1, axis=1)[:, :keep]
        frames.append(
            pd.DataFrame(
                {
                    "user_id": np.repeat(users[lo : lo + 500], keep),
                    "item_id": items[eligible[top.ravel()]],
                    "score": np.take_along_axis(s, top, axis=1).ravel(),
                }
            )
        )
    lists = finish(pd.concat(frames, ignore_index=True), world, users)
    return lists, time.perf_counter() - t0


# ---------------------------------------------------------------- recs' tables, through Spark


def recs_lists(root: Path, day: dt.date, users: np.ndarray) -> dict[str, object]:
    """recs' lists for ``day``, the no-model candidate order and the candidate pool (eval users)."""
    from pyspark.sql import functions as F

    from recs import score
    from recs.config import load_config, replace_section
    from recs.score import fallback_scores, top_k
    from recs.session import get_spark
    from recs.tables import read_date, read_range, read_table

    cfg = load_config(lakehouse=str(root / "lakehouse"), raw=str(root / "raw"), environ={})
    cfg = replace_section(cfg, "spark", shuffle_partitions=2)
    spark = get_spark(cfg)
    judged = spark.createDataFrame(pd.DataFrame({"user_id": users}))
    recs = read_range(spark, cfg, "recommendations", day, day)
    version = recs.select("model_version").first()
    recs_pd = recs.join(judged, "user_id").select("user_id", "item_id", "rank").toPandas()

    if hasattr(score, "read_pool"):  # the pool the features step stored and score ranked
        candidates = score.read_pool(spark, cfg, day)
    elif hasattr(score, "stored_pool"):  # the same, under its earlier name
        candidates = score.stored_pool(spark, cfg, day)
    else:  # recs from before candidate_pool existed
        candidates = score.recommendation_candidates(
            spark,
            cfg,
            day,
            score.scoring_users(spark, cfg, day),
            read_date(spark, cfg, "item_features", day),
            read_date(spark, cfg, "items", day),
        )
    candidates = candidates.join(F.broadcast(judged), "user_id").localCheckpoint()
    order = top_k(fallback_scores(candidates), K, 0).select("user_id", "item_id", "rank").toPandas()
    pool = candidates.select("user_id", "item_id", "candidate_source").toPandas()

    runs = read_table(spark, cfg, "pipeline_runs")
    steps = (
        runs.groupBy("step", "status")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("duration_s").alias("s"))
        .toPandas()
        .sort_values(["step", "status"])
    )
    registry = read_table(spark, cfg, "model_registry").select("model_version", "status").toPandas()
    return {
        "recs": recs_pd,
        "candidate order": order,
        "pool": pool,
        "model_version": None if version is None else version.model_version,
        "steps": steps,
        "registry": registry,
    }


# ---------------------------------------------------------------- metrics


def per_user_metrics(lists: pd.DataFrame, truth: pd.DataFrame, users: np.ndarray) -> np.ndarray:
    """(users, METRICS) matrix; a user with no list scores 0."""
    n_rel = truth.groupby("user_id").size().reindex(users).to_numpy(dtype=float)
    hits = lists.merge(truth, on=["user_id", "item_id"])
    out = np.zeros((len(users), len(METRICS)))
    col = 0
    for k in KS:
        h = hits[hits["rank"] <= k]
        n_hits = h.groupby("user_id").size().reindex(users, fill_value=0).to_numpy(dtype=float)
        dcg = (
            (1.0 / np.log2(h["rank"] + 1.0)).groupby(h["user_id"]).sum().reindex(users, fill_value=0.0)
        ).to_numpy()
        discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
        idcg = discounts[np.minimum(n_rel, k).astype(int) - 1]
        out[:, col] = n_hits / n_rel
        out[:, col + 1] = dcg / idcg
        out[:, col + 2] = (n_hits > 0).astype(float)
        col += 3
    return out


def pool_recall(pool: pd.DataFrame, truth: pd.DataFrame, users: np.ndarray) -> np.ndarray:
    got = truth.merge(pool[["user_id", "item_id"]].drop_duplicates(), on=["user_id", "item_id"])
    n_rel = truth.groupby("user_id").size().reindex(users).to_numpy(dtype=float)
    return got.groupby("user_id").size().reindex(users, fill_value=0).to_numpy(dtype=float) / n_rel


def bootstrap(
    values: dict[str, np.ndarray], resamples: int, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Resampled means of each (users, m) matrix, the same user draws for every system."""
    n = len(next(iter(values.values())))
    idx = np.random.default_rng(seed).integers(0, n, (resamples, n))
    return {name: v[idx].mean(axis=1) for name, v in values.items()}, idx


def interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


# ---------------------------------------------------------------- one run, one setting


def judge(
    setting: Setting,
    seed: int,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, object]:
    root = work / f"{setting.name}-seed{seed}"
    marker = root / "backfill-done.json"
    reuse = args.reuse and marker.exists()
    if root.exists() and not reuse:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    config = root / "bench.toml"
    config.write_text(CONFIG_TOML, encoding="utf-8")
    t0 = time.perf_counter()
    summary: SimSummary = generate(root, setting, seed)  # cheap, and deterministic: also on reuse
    gen_s = time.perf_counter() - t0
    days = summary.dates
    scored_day = days[-2]
    print(
        f"\n== {setting.name} seed {seed}: {summary.users} users, {summary.items} items, "
        f"{summary.days} days, {summary.lines:,} event lines ({gen_s:.0f}s); "
        f"backfill {days[0]}..{scored_day}",
        flush=True,
    )
    run: dict[str, object] = {
        "setting": setting.name,
        "seed": seed,
        "sim": dataclasses.asdict(setting),
        "events": summary.events,
        "repeat_view_share": summary.repeat_view_share,
        "new_item_view_share": summary.new_item_view_share,
    }
    if reuse:
        previous = json.loads(marker.read_text(encoding="utf-8"))
        run.update(previous)
        print(f"   reusing the lakehouse of an earlier run ({previous['backfill_seconds']:.0f}s)", flush=True)
    else:
        run["recs_code"] = code_state()
        done = backfills(root, config, days, args.nights, args.backfill_timeout)
        run["backfill_seconds"] = sum(b.seconds for b in done)
        run["backfill_commands"] = [" ".join(b.command) for b in done]
        for b in done:
            print(f"   {' '.join(b.command[2:])}", flush=True)
            print(f"      exit {b.returncode} in {b.seconds:.0f}s (log {b.log})", flush=True)
        if not done[-1].ok:
            run["error"] = done[-1].tail(40)
            run["failed_command"] = " ".join(done[-1].command)
            print("   FAILED; last lines of the log:\n" + indent(done[-1].tail(25)), flush=True)
            return run
        keep = {k: run[k] for k in ("backfill_seconds", "backfill_commands", "recs_code")}
        marker.write_text(json.dumps(keep), encoding="utf-8")

    world = load_world(root / "raw", days)
    users = np.sort(world.truth["user_id"].unique())
    run["users_judged"] = len(users)
    run["new_users_with_truth"] = world.new_users_with_truth
    run["truth_items_per_user"] = float(len(world.truth) / max(len(users), 1))
    seen = world.history.groupby("user_id")["item_id"].unique()
    revisit = [
        it in set_ for it, set_ in zip(world.truth["item_id"], world.truth["user_id"].map(seen), strict=True)
    ]
    run["truth_revisit_share"] = float(np.mean(revisit)) if revisit else float("nan")
    # Items new on D+1 (or out of stock on D) are in the truth but no system could list them.
    run["truth_recommendable_share"] = float(world.truth["item_id"].isin(world.eligible).mean())

    lists: dict[str, pd.DataFrame] = {}
    try:
        from_recs = recs_lists(root, scored_day, users)
    except Exception as exc:  # a missing table is a finding, not a crash of the benchmark
        run["error"] = f"reading recs' tables failed: {type(exc).__name__}: {exc}"
        print("   " + run["error"], flush=True)
        return run
    lists["recs"] = from_recs["recs"]
    lists["candidate order"] = from_recs["candidate order"]
    run["model_version"] = from_recs["model_version"]
    run["pipeline_steps"] = from_recs["steps"].to_dict(orient="records")
    run["models"] = from_recs["registry"].to_dict(orient="records")
    lists["recent items"] = recent_items(world, users)
    lists["co-visitation"] = covisitation(world, users)
    lists["popularity (7d)"] = popularity(world, users)
    try:
        lists["LightFM"], run["lightfm_seconds"] = lightfm_lists(world, users, seed, args.lightfm_epochs)
    except ImportError as exc:
        run["lightfm_missing"] = str(exc)
        print(f"   LightFM not installed ({exc}); its row is left out", flush=True)

    values = {name: per_user_metrics(df, world.truth, users) for name, df in lists.items()}
    pool = from_recs["pool"]
    values["pool recall"] = pool_recall(pool, world.truth, users)[:, None]
    run["per_user"] = values  # dropped before JSON; pooled over seeds by the caller
    run["pool_sources"] = source_recall(pool, world.truth, users, revisit)
    # Retrieval vs ranking: of each system's hits in its top 50, the share recs' pool lacked.
    in_pool = pool[["user_id", "item_id"]].drop_duplicates().assign(_in=True)
    outside = {}
    for name, df in lists.items():
        hits = df.merge(world.truth, on=["user_id", "item_id"]).merge(
            in_pool, on=["user_id", "item_id"], how="left"
        )
        outside[name] = float(hits["_in"].isna().mean()) if len(hits) else float("nan")
    run["hits_outside_pool"] = outside
    run["list_lengths"] = {name: float(df.groupby("user_id").size().mean()) for name, df in lists.items()}
    return run


def source_recall(pool: pd.DataFrame, truth: pd.DataFrame, users: np.ndarray, revisit: list[bool]) -> dict:
    """Share of D+1's items that each candidate source proposed, overall and split by whether the
    user had touched the item before (a re-visit) or not."""
    t = truth.assign(revisit=revisit)
    out: dict[str, dict[str, float]] = {}
    for source in ["any", *sorted(pool["candidate_source"].unique())]:
        p = pool if source == "any" else pool[pool["candidate_source"] == source]
        hit = t.merge(
            p[["user_id", "item_id"]].drop_duplicates(), on=["user_id", "item_id"], how="left", indicator=True
        )
        found = hit["_merge"] == "both"
        out[source] = {
            "all": float(found.mean()),
            "revisits": float(found[hit["revisit"]].mean()) if hit["revisit"].any() else float("nan"),
            "new_to_user": float(found[~hit["revisit"]].mean()) if (~hit["revisit"]).any() else float("nan"),
        }
    return out


# ---------------------------------------------------------------- reporting


def indent(text: str, pad: str = "     ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


def summarise(name: str, runs: list[dict[str, object]], resamples: int, seed: int) -> dict[str, object]:
    """Pool the judged users of every seed of a setting and bootstrap over them."""
    ok = [r for r in runs if "per_user" in r]
    if not ok:
        return {"setting": name, "error": "no run of this setting could be judged"}
    names = [s for s in (*SYSTEMS, "pool recall") if all(s in r["per_user"] for r in ok)]
    values = {s: np.concatenate([r["per_user"][s] for r in ok]) for s in names}
    means, _ = bootstrap(values, resamples, seed)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for s in names:
        cols = METRICS if s != "pool recall" else ["pool_recall"]
        table[s] = {
            m: {
                "mean": float(values[s][:, j].mean()),
                "lo": interval(means[s][:, j])[0],
                "hi": interval(means[s][:, j])[1],
            }
            for j, m in enumerate(cols)
        }
    comparisons: dict[str, dict[str, dict[str, float]]] = {}
    for other in ("LightFM", "candidate order", "popularity (7d)"):
        if other not in values or "recs" not in values:
            continue
        comp = {}
        for j, m in enumerate(METRICS):
            a, b = means["recs"][:, j], means[other][:, j]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = a / b
            diff = a - b
            lo, hi = interval(diff)
            comp[m] = {
                "ratio": float(values["recs"][:, j].mean() / values[other][:, j].mean())
                if values[other][:, j].mean() > 0
                else float("nan"),
                "ratio_lo": interval(ratio)[0],
                "ratio_hi": interval(ratio)[1],
                "diff_lo": lo,
                "diff_hi": hi,
                "verdict": "better" if lo > 0 else ("worse" if hi < 0 else "tie"),
            }
        comparisons[other] = comp
    return {
        "setting": name,
        "users_judged": int(len(values[names[0]])),
        "seeds": [r["seed"] for r in ok],
        "table": table,
        "recs_vs": comparisons,
    }


def print_table(s: dict[str, object], runs: list[dict[str, object]]) -> None:
    print(f"\n### {s['setting']}  ({s['users_judged']} users judged, seeds {s['seeds']})\n")
    head = "| system | " + " | ".join(METRICS) + " |"
    print(head)
    print("|" + "---|" * (len(METRICS) + 1))
    table = s["table"]
    for name, cols in table.items():
        if name == "pool recall":
            continue
        cells = [f"{c['mean']:.4f} [{c['lo']:.3f}, {c['hi']:.3f}]" for c in cols.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if "pool recall" in table:
        c = table["pool recall"]["pool_recall"]
        print(
            "\npool recall (share of D+1 items in recs' candidate pool): "
            f"{c['mean']:.4f} [{c['lo']:.3f}, {c['hi']:.3f}]"
        )
    for r in runs:
        if "per_user" not in r:
            continue
        src = r["pool_sources"]
        parts = ", ".join(
            f"{k} {v['all']:.3f} (revisits {v['revisits']:.3f}, new {v['new_to_user']:.3f})"
            for k, v in src.items()
        )
        print(
            f"seed {r['seed']}: model {r['model_version']}; backfill {r['backfill_seconds']:.0f}s; "
            f"{r['users_judged']} users, {r['truth_items_per_user']:.2f} items each, "
            f"{r['truth_revisit_share']:.0%} re-visits, {r['truth_recommendable_share']:.0%} in D's "
            f"in-stock catalog; {r['new_users_with_truth']} new users not judged"
        )
        print(f"   pool recall by source: {parts}")
        lengths = ", ".join(f"{k} {v:.1f}" for k, v in r["list_lengths"].items())
        print(f"   mean list length: {lengths}")
        outside = ", ".join(f"{k} {v:.0%}" for k, v in r["hits_outside_pool"].items())
        print(f"   share of top-50 hits outside recs' candidate pool: {outside}")


def ratio_cell(vs: dict, other: str, metric: str) -> str:
    if other not in vs:
        return "n/a"
    c = vs[other][metric]
    return f"{c['ratio']:.2f} [{c['ratio_lo']:.2f}, {c['ratio_hi']:.2f}]"


def verdict_cell(vs: dict, other: str, metric: str) -> str:
    if other not in vs:
        return "n/a"
    return {"better": "yes", "tie": "tie (CI spans 0)", "worse": "NO"}[vs[other][metric]["verdict"]]


def print_summary(summaries: list[dict[str, object]], runs: list[dict[str, object]]) -> None:
    print("\n## Summary: recs / peer, ratio of means [95% bootstrap interval]")
    print("(recs >= X: verdict on the paired bootstrap difference of the means)\n")
    cols = ["setting", "metric", "recs / LightFM", "recs / candidate order", "recs / popularity"]
    cols += ["recs >= popularity", "recs >= LightFM"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for s in summaries:
        if "table" not in s:
            print(f"| {s['setting']} | - | {s['error']} |" + " |" * (len(cols) - 3))
            continue
        vs = s["recs_vs"]
        for m in ("ndcg@10", "recall@10", "recall@50"):
            cells = [ratio_cell(vs, o, m) for o in ("LightFM", "candidate order", "popularity (7d)")]
            cells += [verdict_cell(vs, o, m) for o in ("popularity (7d)", "LightFM")]
            print(f"| {s['setting']} | {m} | " + " | ".join(cells) + " |")
    print("\nbackfill wall times:")
    for r in runs:
        status = "ok" if "error" not in r else "FAILED"
        print(
            f"   {r['setting']} seed {r['seed']}: {r.get('backfill_seconds', float('nan')):.0f}s ({status})"
        )
    for r in runs:
        if "error" in r:
            print(f"\nFAILURE {r['setting']} seed {r['seed']}:")
            print(f"   {r.get('failed_command', '')}")
            print(indent(str(r["error"])))


def json_ready(obj: object) -> object:
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items() if k != "per_user"}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dt.date | Path):
        return str(obj)
    return obj


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="default and views_purchases_only, 1 seed, half-size worlds, 5 days, --nights last",
    )
    p.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), help="default: all four")
    p.add_argument("--seeds", type=int, help="seeds per setting (default 2, --quick 1)")
    p.add_argument(
        "--nights",
        choices=["all", "last"],
        help="all: every step every night (default); last: history nights ingest+features only (--quick)",
    )
    p.add_argument("--resamples", type=int, default=500, help="bootstrap resamples over users")
    p.add_argument("--lightfm-epochs", type=int, default=30)
    p.add_argument("--backfill-timeout", type=float, default=1800.0, help="seconds per backfill")
    p.add_argument("--workdir", type=Path, help="keep runs here (default: a temp dir, removed)")
    p.add_argument(
        "--reuse", action="store_true", help="in --workdir, judge lakehouses an earlier run finished again"
    )
    p.add_argument(
        "--recs-ref",
        help="benchmark recs as committed at this git ref (e.g. HEAD), not the working tree",
    )
    p.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = p.parse_args(argv)

    names = args.settings or list(QUICK_SETTINGS if args.quick else SETTINGS)
    nights = args.nights or ("last" if args.quick else "all")
    args.nights = nights
    seeds = range(args.seeds or (1 if args.quick else 2))
    settings = [SETTINGS[n] for n in names]
    if args.quick:
        settings = [quick_version(s) for s in settings]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="recs-quality-"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.recs_ref:
        site = install_ref(args.recs_ref, work)
        print(f"recs {args.recs_ref} ({os.environ['BENCH_QUALITY_RECS_COMMIT'][:12]}) installed at {site}")
    else:
        print("recs: the installed (working tree) version")
    t0 = time.perf_counter()
    runs: list[dict[str, object]] = []
    summaries = []
    for setting in settings:
        mine = [judge(setting, seed, work, args) for seed in seeds]
        runs += mine
        summary = summarise(setting.name, mine, args.resamples, seed=12345)
        summaries.append(summary)
        if "table" in summary:
            print_table(summary, mine)
    print_summary(summaries, runs)
    total = time.perf_counter() - t0
    print(f"\nwhole benchmark: {total:.0f}s wall; {os.cpu_count()} CPUs; workdir {work}")
    if args.out:
        doc = {
            "quick": args.quick,
            "nights": nights,
            "recs_ref": args.recs_ref,
            "wall_seconds": total,
            "summaries": summaries,
            "runs": runs,
        }
        args.out.write_text(json.dumps(json_ready(doc), indent=1), encoding="utf-8")
        print(f"wrote {args.out}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


QUICK_SETTINGS = ("default", "views_purchases_only")


def quick_version(s: Setting) -> Setting:
    """Half the users and items, 5 days (the bursty world keeps 10: it needs its week-long gaps)."""
    return s.scaled(0.5, days=min(s.days, 10 if s.bursty else 5))


if __name__ == "__main__":
    main()
