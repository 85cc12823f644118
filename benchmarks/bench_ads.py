"""Budget pacing and audiences: what they deliver and what they cost a night.

On a lakehouse where ``--date`` D and D+1 were ingested and D was scored (``recs demo``
leaves one under ``demo/``), in one process:

* pacing -- for each expected number of impressions per ad slot, the ad lists of D ranked
  with and without budgets: campaigns whose planned spend passes their daily budget, the
  largest planned spend / budget, the planned eCPM against the unpaced ranking's, rounds;
* audiences -- for each campaign audience of D, the share of its users who clicked one of
  the campaign's ads or touched its ads' items on D+1, against the same share over every
  user eligible for the campaign (what targeting everyone would get);
* cost -- the paced ad lists and the audiences computed to Spark's ``noop`` sink (median of
  ``--repeats`` after a warm-up), the ad lists also unpaced, against the night's steps as
  the ledger recorded them.

Usage: ``python benchmarks/bench_ads.py --lakehouse demo/lakehouse --date 2026-01-05``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import lakehouse_parser, machine, median_time, night_steps, open_lakehouse, quiet_logs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = lakehouse_parser(__doc__)
    p.add_argument("--impressions", type=float, nargs="+", default=[1.0, 20.0, 100.0, 500.0])
    args = p.parse_args(argv)
    quiet_logs()

    from pyspark.sql import functions as F

    from recs import score
    from recs.score.ads import eligible_pairs
    from recs.score.health import pacing_figures
    from recs.score.pacing import planned_spend
    from recs.tables import read_date

    cfg, spark = open_lakehouse(args)
    d, nxt = args.date, args.date + dt.timedelta(days=1)
    inputs = score.read_inputs(spark, cfg, d)
    inputs.users.cache()
    s, e = cfg.score, cfg.experiment
    rows = score.scoring_rows(inputs, inputs.pool, cfg)

    def ranked(output: str):
        """One output's rows and the model's scores of them alone (a night scores all three at once)."""
        scored = score.model_arm_scores(inputs, {output: rows[output]}, cfg)
        return rows[output], score.scores_of(scored, output)

    def rank_ads(pacing):
        return score.rank_ads(inputs, *ranked("ad_candidates"), s, pacing, e)

    print(f"machine: {machine()}")
    print(f"date {d}: model {inputs.model.version if inputs.model else 'none'}")
    print(f"pacing (ads per user = {s.ads_per_user}):")
    for ips in args.impressions:
        pacing = dataclasses.replace(cfg.pacing, enabled=True, impressions_per_slot=ips)
        paced = rank_ads(pacing)
        spend = planned_spend(paced.ranked, paced.budgets).withColumn(
            "share", F.col("spend") / F.col("budget")
        )
        top = spend.agg(F.max("share")).first()[0] or 0.0
        fig = pacing_figures(paced.ranked, paced.unpaced, paced.budgets)
        kept = fig["planned_ecpm"] / fig["unpaced_ecpm"] if fig["unpaced_ecpm"] else float("nan")
        print(
            f"  {ips:6g} impressions/slot: {fig['campaigns_over_budget_unpaced']:.0f} of "
            f"{paced.budgets.count()} campaigns over budget unpaced, 0 allowed after pacing "
            f"(largest planned spend = {top:.1%} of its budget, {paced.rounds} re-ranks); "
            f"planned eCPM {fig['planned_ecpm']:.2f} = {kept:.1%} of unpaced {fig['unpaced_ecpm']:.2f}"
        )

    # Audiences against everyone eligible, judged by what users did on D+1.
    audiences = read_date(spark, cfg, "audiences", d).where("audience_type = 'campaign'")
    live = inputs.live_ads
    eligible = eligible_pairs(inputs.users, live, inputs.capped).select(
        "user_id", F.col("campaign_id").alias("audience_id")
    )
    ads = live.select("ad_id", F.col("campaign_id").alias("audience_id"), "item_id")
    nxt_events = read_date(spark, cfg, "events", nxt)
    clicked = nxt_events.where("event_type = 'ad_click'").join(ads.drop("item_id"), "ad_id")
    touched = nxt_events.where("event_type != 'impression' AND ad_id IS NULL").join(
        ads.drop("ad_id"), "item_id"
    )
    responders = (
        clicked.select("user_id", "audience_id")
        .unionByName(touched.select("user_id", "audience_id"))
        .distinct()
        .withColumn("hit", F.lit(1))
    )

    def hit_rate(users):
        return (
            users.join(responders, ["user_id", "audience_id"], "left")
            .agg(F.avg(F.coalesce("hit", F.lit(0)).cast("double")), F.count(F.lit(1)))
            .first()
        )

    chosen, everyone = hit_rate(audiences.select("user_id", "audience_id")), hit_rate(eligible.distinct())
    print(
        f"audiences: {audiences.select('audience_id').distinct().count()} campaigns, {chosen[1]} users; "
        f"share who clicked or touched the campaign's items on {nxt}: {chosen[0]:.4f}, against "
        f"{everyone[0]:.4f} over all {everyone[1]} eligible (user, campaign) pairs "
        f"({chosen[0] / everyone[0] if everyone[0] else float('nan'):.1f}x)"
    )

    def ads_with(pacing) -> None:
        rank_ads(pacing).ranked.write.format("noop").mode("overwrite").save()

    def audience_rows() -> None:
        score.rank_audiences(inputs, *ranked("audiences"), cfg.audiences, e).write.format("noop").mode(
            "overwrite"
        ).save()

    paced_s, paced_runs = median_time(lambda: ads_with(cfg.pacing), args.repeats)
    free_s, free_runs = median_time(
        lambda: ads_with(dataclasses.replace(cfg.pacing, enabled=False)), args.repeats
    )
    audience_s, audience_runs = median_time(audience_rows, args.repeats)
    steps = night_steps(spark, cfg, d)
    night = sum(steps.values())

    def runs(ts):
        return " ".join(f"{t:.1f}" for t in ts)

    print(
        f"ad lists: paced {paced_s:.1f} s (median of {runs(paced_runs)}), unpaced {free_s:.1f} s "
        f"({runs(free_runs)}): pacing adds {paced_s - free_s:.1f} s = "
        f"{(paced_s - free_s) / night:.1%} of the night"
    )
    print(
        f"audiences: {audience_s:.1f} s (median of {runs(audience_runs)}) = {audience_s / night:.1%} of the "
        f"night's steps ({', '.join(f'{k} {v:.0f} s' for k, v in steps.items())}; {night:.0f} s)"
    )


if __name__ == "__main__":
    main()
