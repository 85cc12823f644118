"""Item-to-item tables: how good ``similar_items`` is, and what the two tables cost a night.

On a lakehouse where ``--date`` D and D+1 were ingested and D was scored (``recs demo``
leaves one under ``demo/``), in one process:

* category share -- how often a similar item shares its anchor's category, against an
  in-stock item drawn at random (the sum of squared category shares);
* held-out co-views -- for anchors co-viewed with something on D+1 (two interactions in one
  session, or one burst of a user's events), the share whose D+1 partners include one of the
  anchor's top 10 on D. Beside it, the same share for the 10 most popular in-stock items of
  the anchor's category and for the 10 most popular overall, as of D;
* cost -- the two tables computed and written to Spark's ``noop`` sink (median of
  ``--repeats`` after a warm-up) against the night's steps as the ledger recorded them.

Usage: ``python benchmarks/bench_related.py --lakehouse demo/lakehouse --date 2026-01-05``.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import lakehouse_parser, machine, median_time, night_steps, open_lakehouse, quiet_logs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = lakehouse_parser(__doc__)
    args = p.parse_args(argv)
    quiet_logs()

    from pyspark.sql import functions as F

    from recs import score
    from recs.frames import top_n
    from recs.schemas import interaction_events
    from recs.score.candidates import popularity, with_sessions
    from recs.tables import read_date

    cfg, spark = open_lakehouse(args)
    d, nxt = args.date, args.date + dt.timedelta(days=1)

    items = read_date(spark, cfg, "items", d)
    similar = read_date(spark, cfg, "similar_items", d)
    cats = items.select("item_id", "category_id")
    labelled = similar.join(cats, "item_id").join(
        cats.withColumnRenamed("item_id", "neighbour_id").withColumnRenamed("category_id", "n_cat"),
        "neighbour_id",
    )
    same = labelled.agg(F.avg((F.col("category_id") == F.col("n_cat")).cast("double"))).first()[0]
    stocked = items.where("in_stock")
    total = stocked.count()
    random_same = stocked.groupBy("category_id").count().agg(F.sum((F.col("count") / total) ** 2)).first()[0]

    # Held-out co-views on D+1: distinct (anchor, partner) pairs of one session.
    touched = (
        with_sessions(
            read_date(spark, cfg, "events", nxt)
            .where(F.col("item_id").isNotNull())
            .where(F.col("event_type").isin(*interaction_events()))
        )
        .select("session_id", "item_id")
        .distinct()
    )
    partners = (
        touched.alias("a")
        .join(touched.alias("b"), "session_id")
        .where(F.col("a.item_id") != F.col("b.item_id"))
        .select(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("neighbour_id"))
        .distinct()
    )
    anchors = partners.select("item_id").distinct()
    popular = popularity(read_date(spark, cfg, "item_features", d)).withColumnRenamed(
        "item_id", "neighbour_id"
    )
    lists = {
        "similar_items": similar.where("rank <= 10").select("item_id", "neighbour_id"),
        "category popular": cats.join(
            top_n(popular, ["category_id"], "source_score", 11, tie="neighbour_id"), "category_id"
        )
        .where(F.col("item_id") != F.col("neighbour_id"))
        .transform(lambda df: top_n(df, ["item_id"], "source_score", 10, tie="neighbour_id"))
        .select("item_id", "neighbour_id"),
        "global popular": cats.select("item_id")
        .crossJoin(
            top_n(popular, [], "source_score", 11, tie="neighbour_id").select("neighbour_id", "source_score")
        )
        .where(F.col("item_id") != F.col("neighbour_id"))
        .transform(lambda df: top_n(df, ["item_id"], "source_score", 10, tie="neighbour_id"))
        .select("item_id", "neighbour_id"),
    }
    n_anchors = anchors.count()
    hits = {
        name: lst.join(partners, ["item_id", "neighbour_id"]).select("item_id").distinct().count()
        / max(n_anchors, 1)
        for name, lst in lists.items()
    }

    inputs = score.read_inputs(spark, cfg, d)

    def related() -> None:
        for df in score.related_items(inputs, cfg.score, cfg.related):
            df.write.format("noop").mode("overwrite").save()

    related_s, runs = median_time(related, args.repeats)
    steps = night_steps(spark, cfg, d)
    night = sum(steps.values())

    print(f"machine: {machine()}")
    print(f"date {d}: {similar.select('item_id').distinct().count()} anchors with similar items")
    print(
        f"category share of similar items: {same:.3f} vs {random_same:.3f} for a random in-stock item "
        f"({same / random_same:.1f}x)"
    )
    print(f"held-out co-views on {nxt}: {n_anchors} anchors; share whose partners include one of the top 10:")
    for name, share in hits.items():
        print(f"  {name:17s} {share:.3f}")
    each = " ".join(f"{t:.1f}" for t in runs)
    print(
        f"item-to-item tables: {related_s:.1f} s (median of {each}) against the night's steps "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in steps.items())}; {night:.0f} s): "
        f"{related_s / night:.0%} of the night"
    )


if __name__ == "__main__":
    main()
