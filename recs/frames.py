"""DataFrame helpers that several stages share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F
from pyspark.sql.window import Window, WindowSpec


def first_rows(
    df: DataFrame,
    key: Sequence[str],
    order: Sequence[Column | str],
    n: int = 1,
    rank: str | None = None,
) -> DataFrame:
    """The first ``n`` rows of each ``key`` group by ``order``; ``rank`` names a column that keeps
    their position (1..n), otherwise none is added.

    End ``order`` with a unique tie-break: without one, which rows survive can change from run
    to run, and a rerun of a date would not reproduce its rows.
    """
    column = rank or "_first_rows"
    w = Window.partitionBy(*key).orderBy(*order)
    kept = df.withColumn(column, F.row_number().over(w)).where(F.col(column) <= n)
    return kept if rank else kept.drop(column)


def top_n(
    df: DataFrame, key: Sequence[str], score: str, n: int, tie: str = "item_id", rank: str | None = None
) -> DataFrame:
    """The ``n`` highest ``score`` rows per ``key``, ties broken by ``tie`` ascending."""
    return first_rows(df, key, [F.col(score).desc(), F.col(tie)], n, rank)


# Sums of doubles in Spark depend on the order rows reach the aggregate (partitions, file
# layout, which map output arrives first), so a rerun over the same rows could differ in the
# last bits, and a figure that ranks or compares could flip. Summed as decimals, each term
# rounded to 18 places, the sum is exact and so the same in any order. A group with a NaN or
# infinite term keeps the double result (NaN or infinity whatever the order, never dropped);
# one whose terms or sum reach 1e20 keeps the double sum as well.
EXACT = "decimal(38,18)"


def _decimal_total(c: Column, window: WindowSpec | None = None) -> Column:
    """The exact sum of ``c``, or null when a term or the sum does not fit ``EXACT``."""
    as_decimal = c.try_cast(EXACT)

    def over(agg: Column) -> Column:
        return agg if window is None else agg.over(window)

    return F.when(over(F.count(as_decimal)) == over(F.count(c)), over(F.try_sum(as_decimal)))


def exact_sum(column: Column | str, window: WindowSpec | None = None) -> Column:
    """``sum`` of a double column (over ``window``, if given) that is the same whatever the
    order of its rows."""
    c = F.col(column) if isinstance(column, str) else column
    double = F.sum(c) if window is None else F.sum(c).over(window)
    return F.coalesce(_decimal_total(c, window).cast("double"), double)


def exact_mean(column: Column | str) -> Column:
    """``avg`` of a double column that is the same whatever the order of its rows (null for none)."""
    c = F.col(column) if isinstance(column, str) else column
    return F.coalesce(F.try_divide(_decimal_total(c), F.count(c)).cast("double"), F.avg(c))


def one_row(*aggregates: DataFrame) -> dict:
    """Single-row aggregates side by side, computed by one query: Spark plans them together
    (and reuses their common scans) instead of running a job per figure."""
    row = aggregates[0]
    for other in aggregates[1:]:
        row = row.crossJoin(other)
    return row.first().asDict()


def counting(
    df: DataFrame, column: str, values: Sequence[str]
) -> tuple[DataFrame, Callable[[], dict[str, int]]]:
    """``df``, made to count its rows per value of ``column`` while the next action (a write)
    runs it, and a function that returns those counts (values with none left out).

    The counts come from the same pass as the write: no second job re-reads what was written.
    Values not listed are not counted.
    """
    seen = Observation(f"rows by {column}")
    observed = df.observe(seen, *[F.count_if(F.col(column) == v).alias(v) for v in values])

    def counts() -> dict[str, int]:
        return {v: int(n) for v, n in seen.get.items() if n}

    return observed, counts
