"""Value helpers shared by stages and commands: strict-JSON numbers and metrics as text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def finite_or_none(value: Any) -> Any:
    """NaN and infinities become None, through dicts, lists and tuples.

    Delta columns and JSON files then hold nulls that every reader accepts (strict JSON
    rejects NaN, and a NaN metric would sort and compare unlike a missing one).
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def metric_text(value: float | None, digits: int = 4) -> str:
    """A metric for a log line or a table cell: ``-`` when it is missing or undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def metrics_text(metrics: Mapping[str, Any]) -> str:
    """``name=value`` pairs on one line, floats to four places."""
    return " ".join(
        f"{k}={metric_text(v)}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )
