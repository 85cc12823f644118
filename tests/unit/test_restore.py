"""`recs restore` on a lakehouse where only some outputs have an earlier version of the date."""

from __future__ import annotations

import datetime as dt

from click.testing import CliRunner

from recs.cli import cli
from recs.tables import read_date, replace_partition
from tests.conftest import make_config, uniform_rows

D = dt.date(2026, 4, 2)


def test_restore_puts_back_what_it_can_and_leaves_tables_without_an_earlier_version(spark, tmp_path):
    """recommendations were written twice for D; the other outputs never were (a lakehouse
    from before those tables existed)."""
    cfg = make_config(tmp_path / "lh", tmp_path / "raw")

    def lists(item: str):
        return uniform_rows(
            spark,
            "recommendations",
            [
                {
                    "user_id": "u1",
                    "rank": 1,
                    "item_id": item,
                    "score": 1.0,
                    "candidate_source": "recent",
                    "model_version": "m",
                    "rec_date": D,
                }
            ],
        )

    replace_partition(lists("first"), cfg, "recommendations", D)
    replace_partition(lists("second"), cfg, "recommendations", D)
    common = ["--lakehouse", cfg.lakehouse, "--raw", cfg.raw]

    done = CliRunner().invoke(cli, [*common, "restore", "--date", str(D)])

    assert done.exit_code == 0, done.output
    assert [r.item_id for r in read_date(spark, cfg, "recommendations", D).collect()] == ["first"]
    assert f"audiences {D}: left as is" in done.output

    named = CliRunner().invoke(cli, [*common, "restore", "--date", str(D), "--tables", "audiences"])

    assert named.exit_code != 0
    assert "audiences" in named.output and "Traceback" not in named.output
