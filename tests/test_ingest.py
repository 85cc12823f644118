"""Ingest against real local Spark + Delta on generated raw data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from recs import ingest
from recs.cli import cli
from recs.tables import table_path
from tests.conftest import START

D1, D2 = START, START + dt.timedelta(days=1)
REASON_OF_KIND = {"wrong_day": "event_time_outside_partition"}


@pytest.fixture(scope="module")
def two_days(spark, tmp_path_factory, sample_root):
    from tests.conftest import make_config

    root, summary = sample_root
    cfg = make_config(tmp_path_factory.mktemp("lh-ingest"), root / "raw")
    counts = {d: ingest.run(spark, cfg, d) for d in (D1, D2)}
    return cfg, summary, counts


def events_of(spark, cfg, date):
    return spark.read.format("delta").load(table_path(cfg, "events")).where(F.col("event_date") == date)


def test_counts_add_up_and_match_the_generator(two_days):
    _, summary, counts = two_days
    for d in (D1, D2):
        c, s = counts[d]["events"], summary.day(d)
        assert c.read == s.lines
        assert c.read == c.written + c.quarantined + c.duplicates
        assert c.written == s.valid_events
        assert c.quarantined == s.quarantined
        assert c.duplicates == s.duplicates
        assert counts[d]["catalog"].written == s.catalog_items
        assert counts[d]["ads"].written == s.ads


def test_each_kind_of_bad_record_is_quarantined_with_its_reason(spark, two_days):
    cfg, summary, _ = two_days
    q = (
        spark.read.format("delta")
        .load(table_path(cfg, "events_quarantine"))
        .where(F.col("ingest_date") == D1)
    )
    reasons = {r.reason: r["count"] for r in q.where("source = 'events'").groupBy("reason").count().collect()}
    expected = {REASON_OF_KIND.get(k, k): n for k, n in summary.day(D1).bad.items() if n}
    assert reasons == expected
    assert q.where(F.col("raw").isNull() | (F.col("raw") == "")).count() == 0
    assert q.select("run_id").distinct().count() == 1


def test_duplicates_dropped_once(spark, two_days):
    cfg, _, _ = two_days
    ev = events_of(spark, cfg, D1)
    assert ev.count() == ev.select("event_id").distinct().count()


def test_rerun_is_identical_and_history_shows_the_replace(spark, two_days):
    cfg, _, _ = two_days
    before = sorted(events_of(spark, cfg, D2).collect())
    d1_files = set(events_of(spark, cfg, D1).inputFiles())
    again = ingest.run(spark, cfg, D2)["events"]
    after = sorted(events_of(spark, cfg, D2).collect())
    assert after == before
    assert again.written == len(after)
    last = DeltaTable.forPath(spark, table_path(cfg, "events")).history(1).first()
    assert last.operation == "WRITE"
    assert last.operationParameters["mode"] == "Overwrite"
    assert "2026-01-02" in last.operationParameters["predicate"]
    # Day D-1's partition is untouched: same files, same rows.
    assert set(events_of(spark, cfg, D1).inputFiles()) == d1_files


def test_ledger_records_the_runs(spark, two_days):
    cfg, _, _ = two_days
    from recs.ledger import latest_runs

    runs = spark.read.format("delta").load(table_path(cfg, "pipeline_runs")).where("step = 'ingest'")
    # Each run leaves a running row when it starts and its outcome when it ends.
    assert (
        sorted(r.status for r in runs.collect()).count("running") == runs.select("run_id").distinct().count()
    )
    rows = latest_runs(spark, cfg).where("step = 'ingest'").collect()
    assert {r.run_date for r in rows} == {D1, D2}
    assert all(r.status == "succeeded" and r.row_counts["events_read"] > 0 for r in rows)


def test_missing_raw_partition_is_a_clear_error(spark, cfg):
    missing = START + dt.timedelta(days=300)
    result = CliRunner().invoke(
        cli, ["--lakehouse", cfg.lakehouse, "--raw", cfg.raw, "ingest", "--date", missing.isoformat()]
    )
    assert result.exit_code != 0
    assert "raw input partition not found" in result.output
    assert f"dt={missing.isoformat()}" in result.output
    assert "Traceback" not in result.output


def test_failed_run_is_recorded(spark, cfg):
    with pytest.raises(ingest.MissingInputError):
        ingest.run(spark, cfg, START + dt.timedelta(days=300))
    runs = spark.read.format("delta").load(table_path(cfg, "pipeline_runs"))
    runs = runs.orderBy("started_at", "finished_at").collect()
    assert [r.status for r in runs] == ["running", "failed"]
    assert "raw input partition not found" in runs[1].error


# --------------------------------------------------------------------------- hand-made lines


def event_line(event_id: str, when: str, *, etype: str = "view", user: str = "u1", **extra) -> str:
    import json

    row = {"event_id": event_id, "event_time": when, "user_id": user, "event_type": etype, "item_id": "i1"}
    return json.dumps({**row, **extra})


def write_day(raw, day: dt.date, lines: list[str]) -> None:
    """One day of raw feeds: the given event lines, a one-item catalog and a one-ad inventory."""
    import json

    for feed, text in (
        ("events", "\n".join(lines) + "\n"),
        (
            "catalog",
            json.dumps({"item_id": "i1", "category_id": "c1", "price": 3.0, "in_stock": True}) + "\n",
        ),
        (
            "ads",
            json.dumps({"ad_id": "a1", "campaign_id": "k1", "item_id": "i1", "bid": 0.5, "status": "active"}),
        ),
    ):
        folder = raw / feed / f"dt={day}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.jsonl").write_text(text, encoding="utf-8")


def stored(spark, cfg, table: str, column: str, day: dt.date):
    from deltalake import DeltaTable as RustTable

    return RustTable(table_path(cfg, table)).to_pyarrow_table(filters=[(column, "=", day)]).to_pylist()


@pytest.fixture()
def hand_cfg(tmp_path):
    """A few hand-made lines, so one bad line is a large share: the reject threshold is off."""
    from recs.config import replace_section
    from tests.conftest import make_config

    return replace_section(
        make_config(tmp_path / "lakehouse", tmp_path / "raw"), "ingest", max_bad_fraction=1.0
    )


@pytest.mark.parametrize("invalid_first", [True, False])
def test_an_invalid_twin_never_displaces_the_valid_event(spark, hand_cfg, invalid_first):
    day = dt.date(2026, 3, 2)
    # Duplicates are ranked by event_time: the invalid twin sorts first when it is earlier.
    bad_time, good_time = ("T08:00:00Z", "T09:00:00Z") if invalid_first else ("T10:00:00Z", "T09:00:00Z")
    bad = event_line("e1", f"{day}{bad_time}", etype="teleport")
    good = event_line("e1", f"{day}{good_time}")
    write_day(Path(hand_cfg.raw), day, [bad, good, event_line("e2", f"{day}T11:00:00Z")])

    c = ingest.run(spark, hand_cfg, day)["events"]

    events = stored(spark, hand_cfg, "events", "event_date", day)
    assert sorted(e["event_id"] for e in events) == ["e1", "e2"]
    assert [e["event_type"] for e in events if e["event_id"] == "e1"] == ["view"]
    quarantine = stored(spark, hand_cfg, "events_quarantine", "ingest_date", day)
    assert [(q["reason"], q["raw"]) for q in quarantine] == [("unknown_event_type", bad)]
    assert (c.read, c.written, c.quarantined, c.duplicates) == (3, 2, 1, 0)


def test_a_late_event_delivered_on_two_days_is_kept_once(spark, hand_cfg):
    d1, d2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    late = event_line("late", f"{d1}T23:30:00Z")  # inside d2's 6-hour lateness window
    write_day(Path(hand_cfg.raw), d1, [late, event_line("a", f"{d1}T10:00:00Z")])
    write_day(Path(hand_cfg.raw), d2, [late, event_line("b", f"{d2}T10:00:00Z")])

    ingest.run(spark, hand_cfg, d1)
    second = ingest.run(spark, hand_cfg, d2)["events"]

    assert sorted(e["event_id"] for e in stored(spark, hand_cfg, "events", "event_date", d1)) == ["a", "late"]
    assert [e["event_id"] for e in stored(spark, hand_cfg, "events", "event_date", d2)] == ["b"]
    assert (second.read, second.written, second.quarantined, second.duplicates) == (2, 1, 0, 1)


def test_blank_and_overlong_lines_are_quarantined_and_counted(spark, hand_cfg, tmp_path):
    from recs.config import replace_section

    day = dt.date(2026, 3, 3)
    cfg = replace_section(hand_cfg, "ingest", max_line_bytes=4096)
    long_line = event_line("long", f"{day}T10:00:00Z", note="x" * 5000)
    lines = [event_line("ok", f"{day}T09:00:00Z"), "", "   ", long_line]
    write_day(Path(cfg.raw), day, lines)

    counts = ingest.run(spark, cfg, day)["events"]

    assert (counts.read, counts.written, counts.quarantined, counts.duplicates) == (4, 1, 3, 0)
    quarantine = stored(spark, cfg, "events_quarantine", "ingest_date", day)
    assert sorted(q["reason"] for q in quarantine) == ["blank_line", "blank_line", "line_too_long"]
    assert [q["raw"] for q in quarantine if q["reason"] == "line_too_long"] == [long_line]
    # What the ledger says was written is what the tables hold, read back without Spark.
    from deltalake import DeltaTable as RustTable

    runs = RustTable(table_path(cfg, "pipeline_runs")).to_pyarrow_table().to_pylist()
    (ledger,) = [r["row_counts"] for r in runs if r["step"] == "ingest" and r["status"] == "succeeded"]
    assert dict(ledger)["events_written"] == len(stored(spark, cfg, "events", "event_date", day)) == 1
    assert dict(ledger)["events_quarantined"] == 3


def test_a_valid_line_of_a_few_megabytes_under_the_limit_is_kept(spark, hand_cfg):
    from recs.config import replace_section

    day = dt.date(2026, 3, 4)
    cfg = replace_section(hand_cfg, "ingest", max_line_bytes=8 << 20)
    big = event_line("big", f"{day}T10:00:00Z", note="y" * (3 << 20))
    write_day(Path(cfg.raw), day, [big])

    counts = ingest.run(spark, cfg, day)["events"]

    assert (counts.read, counts.written, counts.quarantined) == (1, 1, 0)
    assert [e["event_id"] for e in stored(spark, cfg, "events", "event_date", day)] == ["big"]


def test_a_catalog_with_no_valid_row_is_refused_and_replaces_nothing(spark, hand_cfg):
    """Every price sent as a string: the day is refused before any table but the quarantine changes."""
    import json

    day, before = dt.date(2026, 3, 6), dt.date(2026, 3, 5)
    write_day(Path(hand_cfg.raw), before, [event_line("old", f"{before}T09:00:00Z")])
    ingest.run(spark, hand_cfg, before)
    write_day(Path(hand_cfg.raw), day, [event_line("new", f"{day}T09:00:00Z")])
    bad = [
        json.dumps({"item_id": f"i{i}", "category_id": "c", "price": "3.50", "in_stock": True})
        for i in range(3)
    ]
    (Path(hand_cfg.raw) / "catalog" / f"dt={day}" / "part-0.jsonl").write_text("\n".join(bad) + "\n")
    events_version = DeltaTable.forPath(spark, table_path(hand_cfg, "events")).history(1).first().version

    with pytest.raises(ingest.FeedRejectedError, match="catalog feed .* has no valid rows"):
        ingest.run(spark, hand_cfg, day)

    quarantine = stored(spark, hand_cfg, "events_quarantine", "ingest_date", day)
    assert sorted(q["raw"] for q in quarantine) == sorted(bad)
    assert (
        DeltaTable.forPath(spark, table_path(hand_cfg, "events")).history(1).first().version == events_version
    )
    assert stored(spark, hand_cfg, "events", "event_date", day) == []


def test_an_empty_events_file_fails_the_step(spark, hand_cfg):
    day = dt.date(2026, 3, 7)
    write_day(Path(hand_cfg.raw), day, [])
    (Path(hand_cfg.raw) / "events" / f"dt={day}" / "part-0.jsonl").write_bytes(b"")

    with pytest.raises(ingest.FeedRejectedError, match="events feed .* has no valid rows .read 0 lines"):
        ingest.run(spark, hand_cfg, day)

    runs = spark.read.format("delta").load(table_path(hand_cfg, "pipeline_runs"))
    assert [r.status for r in runs.orderBy("started_at", "finished_at").collect()] == ["running", "failed"]


def test_a_mostly_bad_feed_is_refused_naming_the_feed_the_share_and_the_limit(spark, hand_cfg):
    from recs.config import replace_section

    day = dt.date(2026, 3, 8)
    cfg = replace_section(hand_cfg, "ingest", max_bad_fraction=0.05)
    lines = [event_line(f"ok{i}", f"{day}T09:00:00Z") for i in range(18)] + ["{not json", "{nor this"]
    write_day(Path(cfg.raw), day, lines)

    with pytest.raises(
        ingest.FeedRejectedError,
        match=r"events feed .*: 2 of 20 lines quarantined \(10.0%\).*max_bad_fraction = 5.0%",
    ):
        ingest.run(spark, cfg, day)


def test_a_line_that_is_not_utf8_is_quarantined_with_its_exact_bytes(spark, hand_cfg):
    import base64

    day = dt.date(2026, 3, 9)
    write_day(Path(hand_cfg.raw), day, [event_line("ok", f"{day}T09:00:00Z")])
    bad = event_line("bad", f"{day}T10:00:00Z", user="uXX").encode("ascii").replace(b"XX", b"\xff\xfe")
    with open(Path(hand_cfg.raw) / "events" / f"dt={day}" / "part-0.jsonl", "ab") as f:
        f.write(bad + b"\n")

    counts = ingest.run(spark, hand_cfg, day)["events"]

    assert (counts.read, counts.written, counts.quarantined) == (2, 1, 1)
    (q,) = stored(spark, hand_cfg, "events_quarantine", "ingest_date", day)
    assert q["reason"] == "invalid_utf8"
    assert base64.b64decode(q["raw_base64"]) == bad
    assert [e["user_id"] for e in stored(spark, hand_cfg, "events", "event_date", day)] == ["u1"]


def test_a_shop_without_ads_ingests_with_an_empty_ads_partition(spark, hand_cfg):
    import shutil

    day = dt.date(2026, 3, 10)
    write_day(Path(hand_cfg.raw), day, [event_line("ok", f"{day}T09:00:00Z")])
    shutil.rmtree(Path(hand_cfg.raw) / "ads" / f"dt={day}")

    counts = ingest.run(spark, hand_cfg, day)

    assert (counts["ads"].read, counts["ads"].written) == (0, 0)
    assert counts["events"].written == 1
    assert stored(spark, hand_cfg, "ads", "snapshot_date", day) == []


def test_a_day_far_below_its_usual_volume_is_refused(hand_cfg):
    """min_volume_ratio = 0.5 of the median of the days before (10, 12, 11 -> 11)."""
    from recs.config import replace_section
    from recs.ingest import FeedCounts, check_feeds

    cfg = replace_section(hand_cfg, "ingest", min_volume_ratio=0.5)
    paths = {"events": "raw/events/dt=D", "catalog": "raw/catalog/dt=D", "ads": None}

    def day(events_written: int) -> dict[str, FeedCounts]:
        return {
            "events": FeedCounts(events_written, events_written, 0, 0),
            "catalog": FeedCounts(5, 5, 0, 0),
            "ads": FeedCounts(0, 0, 0, 0),
        }

    check_feeds(day(6), paths, cfg, [10, 12, 11])  # 6 >= 0.5 * 11
    with pytest.raises(
        ingest.FeedRejectedError, match=r"5 valid events, below ingest.min_volume_ratio = 0.5 .*\(11\)"
    ):
        check_feeds(day(5), paths, cfg, [10, 12, 11])
    check_feeds(day(1), paths, cfg, [10, 12])  # two days of history are too few to judge
    check_feeds(day(1), paths, replace_section(cfg, "ingest", min_volume_ratio=0.0), [10, 12, 11])
