"""Each rule of ingest validation, the candidate merge, the gate and the ledger, on hand-made rows."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recs.frames import exact_mean, exact_sum, first_rows
from recs.ingest import mark_duplicates, parse_json, validate_events
from recs.model.registry import gate
from recs.schemas import raw_schema
from recs.score.candidates import merge_and_filter
from recs.values import finite_or_none, metric_text

D = dt.date(2026, 4, 2)


def event(event_id: str | None = "e", **fields) -> str:
    base = {"event_id": event_id, "user_id": "u", "event_type": "view", "item_id": "i"}
    return json.dumps({**base, "event_time": "2026-04-02T10:00:00", **fields})


# line -> the reason ingest must give it (None: valid). Each line breaks exactly one rule.
LINES = {
    event("ok"): None,
    event("late_ok", event_time="2026-04-01T20:00:00"): None,  # inside the 6-hour lateness
    event("ad_ok", event_type="ad_click", item_id=None, ad_id="a1"): None,
    "   ": "blank_line",
    '{"event_id": "x", ': "malformed_json",
    event("long", user_id="u" * 300): "line_too_long",
    event(None): "missing_event_id",
    event("no_user", user_id="  "): "missing_user_id",
    event("no_type", event_type=None): "missing_event_type",
    event("odd_type", event_type="hover"): "unknown_event_type",
    event("bad_time", event_time="yesterday"): "bad_event_time",
    event("too_early", event_time="2026-04-01T17:59:59"): "event_time_outside_partition",
    event("tomorrow", event_time="2026-04-03T00:00:00"): "event_time_outside_partition",
    event("no_item", item_id=None): "missing_item_id",
    event("no_ad", event_type="ad_impression", item_id=None): "missing_ad_id",
    event("neg_price", price=-1.0): "negative_price",
    event("neg_pos", position=-3): "negative_position",
}


def test_every_validation_rule_of_events_gives_its_own_reason(spark):
    lines = spark.createDataFrame([(raw, "f") for raw in LINES], "raw string, source_file string")
    parsed = parse_json(lines, raw_schema("events"), max_line_bytes=200)

    got = {r.raw: r.reason for r in validate_events(parsed, D, lateness_hours=6).collect()}

    assert got == LINES


def test_duplicates_are_judged_among_valid_rows_only(spark):
    """e1 twice valid (the earlier kept), e2 valid once with an invalid twin sorted first."""
    rows = [
        ("e1", "2026-04-02 09:00:00", None, "b"),
        ("e1", "2026-04-02 08:00:00", None, "a"),
        ("e2", "2026-04-02 07:00:00", "bad_event_time", "c"),
        ("e2", "2026-04-02 11:00:00", None, "d"),
    ]
    df = spark.createDataFrame(rows, "event_id string, event_time string, reason string, raw string")

    got = {r.raw: r.duplicate for r in mark_duplicates(df, "event_id", ["event_time"]).collect()}

    assert got == {"a": False, "b": True, "c": False, "d": False}


def test_the_merge_keeps_the_best_source_and_drops_bought_out_of_stock_and_delisted(spark):
    schema = "user_id string, item_id string, candidate_source string, source_score double"
    recent = spark.createDataFrame([("u", "i1", "recent", 1.0), ("u", "bought", "recent", 9.0)], schema)
    covisit = spark.createDataFrame([("u", "i1", "covisit", 5.0), ("u", "i2", "covisit", 2.0)], schema)
    popular = spark.createDataFrame(
        [("u", "i2", "global_popular", 9.0), ("u", "gone", "global_popular", 8.0)]
        + [("u", "empty", "global_popular", 7.0), ("v", "i2", "global_popular", 1.0)],
        schema,
    )
    bought = spark.createDataFrame([("u", "bought")], "user_id string, item_id string")
    items = spark.createDataFrame(
        [("i1", "c1", True), ("i2", "c2", True), ("bought", "c1", True), ("empty", "c1", False)],
        "item_id string, category_id string, in_stock boolean",
    )  # "gone" is not in the catalog any more

    got = merge_and_filter([recent, covisit, popular], bought, items)

    assert sorted((r.user_id, r.item_id, r.candidate_source, r.category_id) for r in got.collect()) == [
        ("u", "i1", "recent", "c1"),  # recent outranks covisit whatever the scores
        ("u", "i2", "covisit", "c2"),  # covisit outranks global_popular
        ("v", "i2", "global_popular", "c2"),
    ]


@pytest.mark.parametrize(
    ("auc", "incumbent", "status"),
    [
        (0.70, None, "promoted"),  # clears the floor, nothing to beat
        (0.55, None, "rejected"),  # below the floor of 0.6
        (0.70, 0.705, "promoted"),  # within the 0.01 tolerance of the incumbent
        (0.70, 0.72, "rejected"),  # worse than the incumbent by more than the tolerance
        (0.75, 0.70, "promoted"),
        (math.nan, None, "rejected"),  # one class on the validation day
    ],
)
def test_the_gate_promotes_only_above_the_floor_and_near_the_incumbent(auc, incumbent, status):
    assert gate(auc, floor=0.6, incumbent_auc=incumbent, tolerance=0.01).status == status


def test_a_failing_step_is_recorded_as_failed_with_its_error_and_the_error_still_raised(spark, tmp_path):
    from recs.ledger import latest_runs, record_step
    from tests.conftest import make_config

    cfg = make_config(tmp_path / "lh", tmp_path / "raw")
    with pytest.raises(ValueError, match="feed exploded"), record_step(spark, cfg, "ingest", D):
        raise ValueError("feed exploded")

    (row,) = latest_runs(spark, cfg).collect()
    assert (row.step, row.run_date, row.status) == ("ingest", D, "failed")
    assert row.error == "ValueError: feed exploded"


def test_first_rows_keeps_n_per_key_in_order_and_can_number_them(spark):
    df = spark.createDataFrame(
        [("a", 3, "x"), ("a", 5, "y"), ("a", 5, "w"), ("b", 1, "z")], "k string, s int, t string"
    )

    top = first_rows(df, ["k"], [F.col("s").desc(), F.col("t")], n=2, rank="r")

    assert sorted(tuple(r) for r in top.collect()) == [("a", 5, "w", 1), ("a", 5, "y", 2), ("b", 1, "z", 1)]
    assert first_rows(df, ["k"], ["s", "t"]).columns == ["k", "s", "t"]


def test_exact_sums_give_the_true_sum_whatever_the_order_of_the_rows(spark):
    # In doubles 1e16 + 1 == 1e16: summed in this order the two 1.0s vanish, in another they do not.
    values = [1e16, 1.0, 1.0, -1e16, 0.1, 0.2]
    true_sum = math.fsum(values)  # 2.3000000000000003, correctly rounded
    for order in (values, values[::-1], sorted(values), [values[i] for i in (1, 2, 0, 4, 3, 5)]):
        df = spark.createDataFrame([(v,) for v in order], "v double")
        for layout in (df.coalesce(1), df.repartition(3)):
            row = layout.agg(exact_sum("v").alias("s"), exact_mean("v").alias("m")).first()
            assert row.s == pytest.approx(true_sum, rel=1e-15, abs=0)
            assert row.m == pytest.approx(true_sum / len(values), rel=1e-15, abs=0)
    running = Window.orderBy("i").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    indexed = spark.createDataFrame(list(enumerate(values)), "i int, v double").repartition(3)
    got = [r.s for r in indexed.select("i", exact_sum("v", running).alias("s")).orderBy("i").collect()]
    assert got == pytest.approx([math.fsum(values[: i + 1]) for i in range(len(values))], rel=1e-15, abs=0)
    empty = spark.createDataFrame([(None,)], "v double")
    assert empty.agg(exact_sum("v"), exact_mean("v")).first() == (None, None)
    # A term that is not a number is not dropped: the figure says so, as a double sum would.
    odd = spark.createDataFrame(
        [("nan", 1.0), ("nan", math.nan), ("inf", 1.0), ("inf", math.inf)], "g string, v double"
    )
    got = {
        r.g: (r.s, r.m)
        for r in odd.groupBy("g").agg(exact_sum("v").alias("s"), exact_mean("v").alias("m")).collect()
    }
    assert math.isnan(got["nan"][0]) and math.isnan(got["nan"][1])
    assert got["inf"] == (math.inf, math.inf)
    huge = spark.createDataFrame([(1e25,), (1.0,)], "v double")  # past the decimal's range: a double sum
    assert huge.agg(exact_sum("v"), exact_mean("v")).first() == (1e25, 5e24)


def test_undefined_numbers_become_null_and_show_as_a_dash():
    value = {"auc": math.nan, "n": 3, "history": [1.0, math.inf, {"x": -math.inf}]}
    assert finite_or_none(value) == {"auc": None, "n": 3, "history": [1.0, None, {"x": None}]}
    assert [metric_text(v) for v in (None, math.nan, 0.123456)] == ["-", "-", "0.1235"]
