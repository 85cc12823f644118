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

from recs.config import Config, load_config
from recs.errors import ConfigError
from recs.pipeline import STEPS

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
        from recs.errors import KNOWN_ERRORS, StepSkipped

        try:
            return fn(*args, **kwargs)
        except StepSkipped as exc:
            click.echo(f"skipped: {exc}")
            return None
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
        check_roots(ctx.obj)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def check_roots(cfg: Config) -> None:
    """A local lakehouse or raw root that is a file fails here, in one line, before Spark starts."""
    for key, root in (("lakehouse", cfg.lakehouse), ("raw", cfg.raw)):
        if "://" not in root and Path(root).exists() and not Path(root).is_dir():
            raise ConfigError(f"{key} root {root!r} is a file, not a directory")


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


@cli.command("train")
@click.option("--date", "date", type=DATE, required=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Overrides [train] device.")
@click.pass_obj
@friendly_errors
def train_cmd(cfg: Config, date: dt.date, device: str | None) -> None:
    """Fit a DLRM on the label days ending DATE (the last is validation); gate and register it."""
    from recs import train
    from recs.config import replace_section

    if device:
        cfg = replace_section(cfg, "train", device=device)
    outcome = train.run(spark_for(cfg), cfg, date)
    click.echo(f"model {outcome.model_version}: {outcome.status} ({outcome.reason})")


@cli.command("score")
@click.option("--date", "date", type=DATE, required=True)
@click.pass_obj
@friendly_errors
def score_cmd(cfg: Config, date: dt.date) -> None:
    """Write top-k recommendations and ad candidates for rec_date DATE."""
    from recs import score

    counts = score.run(spark_for(cfg), cfg, date)
    click.echo(", ".join(f"{k}={v}" for k, v in counts.items()))
    if counts.get("health_checks_failed"):
        click.echo(
            f"unhealthy: {counts['health_checks_failed']} output health checks failed for {date}", err=True
        )
        sys.exit(EXIT_UNHEALTHY)


@cli.command("evaluate")
@click.option("--date", "date", type=DATE, required=True)
@click.pass_obj
@friendly_errors
def evaluate_cmd(cfg: Config, date: dt.date) -> None:
    """Judge DATE-1's recommendations against DATE's behaviour; write eval_metrics."""
    from recs import evaluate

    evaluate.run(spark_for(cfg), cfg, date)
    print_eval(cfg, date)


def print_eval(cfg: Config, date: dt.date) -> None:
    from rich.console import Console

    from recs.report import eval_table
    from recs.tables import read_range

    rows = read_range(spark_for(cfg), cfg, "eval_metrics", date, date).orderBy("metric", "k").collect()
    title = f"evaluation {date} (recommendations of {date - dt.timedelta(days=1)})"
    Console().print(eval_table(rows, title))


# Exit codes besides 0 (done), 1 (failed) and 2 (usage): see README "Exit codes".
EXIT_DEGRADED = 3
EXIT_UNHEALTHY = 4

STEP_CHOICE = click.Choice(STEPS)


@cli.command("nightly")
@click.option("--date", "date", type=DATE, required=True)
@click.option("--force", is_flag=True, help="Redo steps already recorded as succeeded.")
@click.option("--train", "force_train", is_flag=True, help="Train even if the schedule says not today.")
@click.option("--steps", multiple=True, type=STEP_CHOICE, help="Run only these steps (repeatable).")
@click.option("--profile", is_flag=True, help="Print each step's Spark jobs, queries, scans and commits.")
@click.pass_obj
@friendly_errors
def nightly_cmd(
    cfg: Config, date: dt.date, force: bool, force_train: bool, steps: tuple[str, ...], profile: bool
) -> None:
    """ingest -> features -> train (when due) -> score -> evaluate for DATE, resuming after a failure."""
    from recs.pipeline import nightly

    spark = spark_for(cfg)
    profiler = _profiler(spark, cfg, profile)
    report = nightly(
        spark, cfg, date, steps=steps or STEPS, force=force, force_train=force_train, profiler=profiler
    )
    echo_report(report)
    _print_profile(profiler, f"Spark cost of {date}'s steps")
    if not report.ok:
        raise click.ClickException(f"{report.failed} failed for {date}: {report.error}")
    if report.unhealthy:
        click.echo(f"unhealthy night {date}: {report.unhealthy}; see output_health", err=True)
        sys.exit(EXIT_UNHEALTHY)
    if report.degraded:
        click.echo(f"degraded night {date}: {report.degraded}", err=True)
        sys.exit(EXIT_DEGRADED)


def _profiler(spark, cfg: Config, wanted: bool):
    from recs.profile import SparkProfiler

    return SparkProfiler(spark, cfg) if wanted else None


def _print_profile(profiler, title: str) -> None:
    if profiler is None:
        return
    from rich.console import Console

    from recs.profile import cost_table, jvm_lines, slowest_lines

    console = Console()
    console.print(cost_table(profiler.steps, title))
    for line in slowest_lines(profiler.steps) + jvm_lines(profiler.steps):
        console.print(line, highlight=False)


def echo_report(report) -> None:
    parts = [f"{s} {report.seconds.get(s, 0):.0f}s" for s in report.ran]
    parts += [f"{s} skipped ({why})" for s, why in report.skipped.items()]
    if report.failed:
        parts.append(f"{report.failed} FAILED")
    if report.degraded:
        parts.append(f"DEGRADED ({report.degraded})")
    click.echo(f"{report.date}: " + ", ".join(parts))


@cli.command("backfill")
@click.option("--start", type=DATE, required=True)
@click.option("--end", type=DATE, required=True)
@click.option("--steps", multiple=True, type=STEP_CHOICE, help="Run only these steps (repeatable).")
@click.option("--force", is_flag=True, help="Redo steps already recorded as succeeded.")
@click.option("--dry-run", is_flag=True, help="Print the plan and exit.")
@click.option("--profile", is_flag=True, help="Print each step's Spark jobs, queries, scans and commits.")
@click.pass_obj
@friendly_errors
def backfill_cmd(
    cfg: Config,
    start: dt.date,
    end: dt.date,
    steps: tuple[str, ...],
    force: bool,
    dry_run: bool,
    profile: bool,
) -> None:
    """Run nights START..END in order with the nightly skip/resume rules."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from recs.pipeline import backfill, date_range, plan_night

    if end < start:
        raise click.BadParameter(f"{end} is before --start {start}", param_hint="--end")
    spark = spark_for(cfg)
    days = date_range(start, end)
    wanted = steps or STEPS
    if dry_run:
        from recs.ledger import succeeded_by_date

        done = succeeded_by_date(spark, cfg, days)  # one read of the ledger for the range
        for day in days:
            todo = plan_night(spark, cfg, day, wanted, force, done[day])
            click.echo(f"{day}: {' -> '.join(todo) if todo else 'nothing to do'}")
        return
    columns = (
        TextColumn("backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("days", total=len(days))

        def on_day(report) -> None:
            progress.advance(task)
            progress.console.print(
                f"{report.date}: ran {', '.join(report.ran) or 'nothing'}"
                + (f"; FAILED at {report.failed}: {report.error}" if report.failed else "")
            )

        profiler = _profiler(spark, cfg, profile)
        reports = backfill(
            spark, cfg, start, end, steps=wanted, force=force, on_day=on_day, profiler=profiler
        )
    if profiler is not None:
        from recs.profile import by_step

        profiler.steps = by_step(profiler.steps)
    _print_profile(profiler, f"Spark cost of {start}..{end}, summed per step")
    failed = [r for r in reports if not r.ok]
    if failed:
        raise click.ClickException(
            f"stopped at {failed[0].date} ({failed[0].failed}); rerun the same command to resume"
        )


@cli.command("status")
@click.option("--limit", default=30, show_default=True, help="Most recent (step, date) rows to show.")
@click.pass_obj
@friendly_errors
def status_cmd(cfg: Config, limit: int) -> None:
    """Recent runs per step and date, and the promoted model."""
    from pyspark.sql import functions as F
    from rich.console import Console
    from rich.table import Table

    from recs.ledger import latest_runs, night_status, shown_status
    from recs.model.registry import promoted_model
    from recs.values import metric_text

    spark = spark_for(cfg)
    console = Console()
    latest = latest_runs(spark, cfg)
    if latest is None:
        console.print(f"no runs recorded under {cfg.lakehouse}")
        return
    rows = latest.orderBy(F.col("run_date").desc(), F.col("started_at").desc()).limit(limit).collect()
    table = Table(title=f"pipeline runs ({cfg.lakehouse})")
    for col in ("date", "step", "status", "duration", "rows", "error"):
        table.add_column(col)
    nights: dict[dt.date, dict[str, str]] = {}
    for r in sorted(rows, key=lambda r: (r.run_date, r.started_at)):
        counts = ", ".join(f"{k}={v}" for k, v in sorted(r.row_counts.items())[:4])
        status = shown_status(r)
        nights.setdefault(r.run_date, {})[r.step] = status
        table.add_row(str(r.run_date), r.step, status, f"{r.duration_s:.0f}s", counts, (r.error or "")[:60])
    console.print(table)
    for day, steps in sorted(nights.items()):
        console.print(f"night {day}: {night_status(steps)}")
    model = promoted_model(spark, cfg)
    if model is None:
        console.print("promoted model: none yet")
    else:
        console.print(
            f"promoted model: {model.model_version} (AUC {metric_text(model.metrics.get('auc'))}, "
            f"trained {model.trained_at:%Y-%m-%d %H:%M}, data {model.train_start}..{model.train_end})"
        )


OUTPUTS = (
    "recommendations",
    "ad_candidates",
    "audiences",
    "similar_items",
    "bought_together",
    "output_health",
)


@cli.command("restore")
@click.option("--date", "date", type=DATE, required=True)
@click.option(
    "--tables",
    multiple=True,
    type=click.Choice(OUTPUTS),
    help="Tables to restore (default: every output of score).",
)
@click.pass_obj
@friendly_errors
def restore_cmd(cfg: Config, date: dt.date, tables: tuple[str, ...]) -> None:
    """Put back the previous version of DATE's output partitions (one Delta commit per table).

    Without --tables, a table with no earlier version of DATE (one that a newer release
    added) is left as it is and said so; a table named with --tables must have one.
    """
    from recs.errors import MissingTableError, NothingToRestoreError
    from recs.ledger import record_step
    from recs.tables import restore_partition

    spark = spark_for(cfg)
    with record_step(spark, cfg, "restore", date) as step:
        for name in tables or OUTPUTS:
            try:
                version = restore_partition(spark, cfg, name, date)
            except (NothingToRestoreError, MissingTableError) as exc:
                if tables:
                    raise
                step.details[name] = "nothing earlier to restore"
                click.echo(f"{name} {date}: left as is ({exc})")
                continue
            step.details[name] = f"restored from version {version}"
            click.echo(f"{name} {date}: restored the rows of version {version}")


@cli.command("report")
@click.option("--out", type=click.Path(dir_okay=False), default="recs-report.png", show_default=True)
@click.pass_obj
@friendly_errors
def report_cmd(cfg: Config, out: str) -> None:
    """Render eval_metrics over time (model vs popularity) as a PNG chart."""
    from recs.report import render

    path = render(spark_for(cfg), cfg, Path(out))
    click.echo(f"wrote {path}")


@cli.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="demo",
    show_default=True,
    help="Directory for the demo's raw data and lakehouse.",
)
@click.option("--users", default=1500, show_default=True)
@click.option("--items", default=400, show_default=True)
@click.option("--days", default=6, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.pass_obj
@friendly_errors
def demo_cmd(cfg: Config, out: str, users: int, items: int, days: int, seed: int) -> None:
    """Generate sample data, run the whole pipeline for its last days and print a summary."""
    from recs.demo import run_demo

    run_demo(cfg, Path(out), users=users, items=items, days=days, seed=seed)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
