"""The ``recs`` command line: every pipeline step, backfills, status and the demo.

Commands are thin: they resolve the config and the date, build the session and call the
same ``run(spark, cfg, date)`` functions that ``jobs/`` and the tests call.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from recs.config import Config, ConfigError, load_config

log = logging.getLogger("recs")


class DateType(click.ParamType):
    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


DATE = DateType()


def setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="%H:%M:%S",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False, markup=False)],
        force=True,
    )
    for noisy in ("py4j", "py4j.clientserver", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known operational errors into one clear line and a non-zero exit."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from recs.errors import KNOWN_ERRORS

        try:
            return fn(*args, **kwargs)
        except KNOWN_ERRORS as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="RECS_CONFIG", help="TOML config file."
)
@click.option("--lakehouse", help="Lakehouse root URI (overrides the config).")
@click.option("--raw", help="Raw input root URI (overrides the config).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(
    ctx: click.Context, config_path: str | None, lakehouse: str | None, raw: str | None, verbose: bool
) -> None:
    """recs: batch recommendations with Spark, Delta Lake and a PyTorch DLRM."""
    setup_logging(verbose)
    try:
        ctx.obj = load_config(config_path, lakehouse=lakehouse, raw=raw)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def spark_for(cfg: Config):
    from recs.session import get_spark

    return get_spark(cfg)


@cli.command("sample-data")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory to write raw/ under.")
@click.option("--users", default=2000, show_default=True)
@click.option("--items", default=500, show_default=True)
@click.option("--days", default=14, show_default=True)
@click.option("--start", type=DATE, default="2026-01-01", show_default=True)
@click.option("--seed", default=7, show_default=True)
def sample_data_cmd(out: str, users: int, items: int, days: int, start: dt.date, seed: int) -> None:
    """Generate raw event logs, catalog and ad snapshots with learnable structure."""
    from recs.sample_data import generate

    summary = generate(Path(out), users=users, items=items, days=days, start=start, seed=seed)
    click.echo(f"wrote {days} days of raw data under {Path(out) / 'raw'}: {summary.lines} event lines")


@cli.command("ingest")
@click.option("--date", "date", type=DATE, required=True)
@click.pass_obj
@friendly_errors
def ingest_cmd(cfg: Config, date: dt.date) -> None:
    """Validate and load one day of raw events, catalog and ads into Delta."""
    from recs import ingest

    counts = ingest.run(spark_for(cfg), cfg, date)
    for feed, c in counts.items():
        click.echo(
            f"{feed}: read {c.read}, written {c.written}, "
            f"quarantined {c.quarantined}, duplicates {c.duplicates}"
        )


@cli.command("features")
@click.option("--date", "date", type=DATE, required=True)
@click.pass_obj
@friendly_errors
def features_cmd(cfg: Config, date: dt.date) -> None:
    """Daily rollups, user/item features as of DATE, training examples labelled DATE."""
    from recs import features

    counts = features.run(spark_for(cfg), cfg, date)
    click.echo(", ".join(f"{k}={v}" for k, v in counts.items()))


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
