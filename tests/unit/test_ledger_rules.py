"""The run ledger's rules: a vanished process shows as crashed, a night's state from its steps."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from recs.ledger import night_status, shown_status

NOW = dt.datetime(2026, 5, 1, 12, 0)


def ledger_row(status: str, *, host: str | None = None, pid: int | None = None, age_h: float = 0.0):
    return SimpleNamespace(status=status, host=host, pid=pid, started_at=NOW - dt.timedelta(hours=age_h))


def test_a_running_row_whose_process_is_gone_is_shown_as_crashed():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    assert shown_status(ledger_row("running", host=here, pid=dead.pid), NOW, here) == "crashed"
    assert shown_status(ledger_row("running", host=here, pid=os.getpid()), NOW, here) == "running"
    # Another machine's process cannot be asked; a day without an end is taken as a crash.
    assert shown_status(ledger_row("running", host="elsewhere", pid=1, age_h=30), NOW, here) == "crashed"
    assert shown_status(ledger_row("running", host="elsewhere", pid=1, age_h=2), NOW, here) == "running"
    assert shown_status(ledger_row("failed", host=here, pid=dead.pid), NOW, here) == "failed"


@pytest.mark.parametrize(
    ("steps", "night"),
    [
        (
            {"ingest": "succeeded", "features": "succeeded", "train": "skipped", "score": "succeeded"},
            "succeeded",
        ),
        (
            {"ingest": "succeeded", "features": "succeeded", "train": "failed", "score": "succeeded"},
            "degraded",
        ),
        ({"ingest": "succeeded", "features": "succeeded", "train": "failed"}, "failed"),
        ({"ingest": "succeeded", "features": "failed"}, "failed"),
        ({"ingest": "succeeded", "features": "crashed"}, "crashed"),
        ({"ingest": "succeeded", "features": "running"}, "running"),
    ],
)
def test_a_nights_state_follows_from_its_steps(steps, night):
    assert night_status(steps) == night
