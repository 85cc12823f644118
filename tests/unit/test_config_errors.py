"""Bad configuration and arguments: one line naming the key, before Spark starts."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from recs.cli import cli, friendly_errors
from recs.errors import KNOWN_ERRORS, StepSkipped


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[train]\nepochz = 3\n", "train.epochz"),
        ("[score]\nk = 'many'\n", "score.k"),
        ("[train]\ndevice = 'tpu'\n", "train.device"),
        ("lakehouse = [1\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, toml, needle):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = CliRunner().invoke(cli, ["--config", str(path), "ingest", "--date", "2026-01-01"])
    assert result.exit_code != 0
    assert needle in result.output


def test_environment_overrides_config(tmp_path):
    from recs.config import load_config

    cfg = load_config(environ={"RECS_TRAIN__EPOCHS": "9", "RECS_LAKEHOUSE": "s3://b/recs"})
    assert cfg.train.epochs == 9 and cfg.lakehouse == "s3://b/recs"
    assert load_config(lakehouse="/x", environ={"RECS_LAKEHOUSE": "/y"}).lakehouse == "/x"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"RECS_SCORE__K": "-5"}, "score.k"),
        ({"RECS_TRAIN__WINDOW_DAYS": "0"}, "train.window_days"),
        ({"RECS_INGEST__MAX_BAD_FRACTION": "1.5"}, "ingest.max_bad_fraction"),
        ({"RECS_EVALUATE__KS": "10,0"}, "evaluate.ks"),
    ],
)
def test_an_out_of_range_value_stops_before_spark_naming_the_key(env, needle):
    result = CliRunner().invoke(cli, ["score", "--date", "2026-01-01"], env=env)
    assert result.exit_code == 1
    assert needle in result.output and "out of range" in result.output
    assert "Traceback" not in result.output


def test_a_lakehouse_that_is_a_file_and_dates_in_the_wrong_order_are_one_line_errors(tmp_path):
    afile = tmp_path / "lakehouse.txt"
    afile.write_text("not a lakehouse")
    result = CliRunner().invoke(cli, ["--lakehouse", str(afile), "status"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "is a file" in result.output
    result = CliRunner().invoke(
        cli, ["--lakehouse", str(tmp_path / "lh"), "backfill", "--start", "2026-01-05", "--end", "2026-01-01"]
    )
    assert result.exit_code == 2 and "before --start" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("error", KNOWN_ERRORS, ids=lambda e: e.__name__)
def test_every_known_error_is_one_line_and_exit_1(error):
    @click.command()
    @friendly_errors
    def failing() -> None:
        raise error("the lakehouse path /x is missing")

    result = CliRunner().invoke(failing, [])

    assert result.exit_code == 1
    assert result.output == f"Error: {error.__name__}: the lakehouse path /x is missing\n"


def test_a_skipped_step_exits_0_and_says_why():
    @click.command()
    @friendly_errors
    def skipping() -> None:
        raise StepSkipped("no examples labelled 2026-01-01")

    result = CliRunner().invoke(skipping, [])

    assert (result.exit_code, result.output) == (0, "skipped: no examples labelled 2026-01-01\n")
