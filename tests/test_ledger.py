"""The run ledger: a step leaves a trace when it starts, so a crash is visible; night states."""

from __future__ import annotations

import datetime as dt
import os
import socket

import pytest

from recs.errors import StepNotDoneError
from recs.ledger import latest_runs, record_step, require_done


def test_a_step_is_recorded_as_running_before_it_does_any_work(spark, cfg):
    day = dt.date(2026, 5, 1)
    with pytest.raises(RuntimeError, match="boom"), record_step(spark, cfg, "features", day):
        (during,) = latest_runs(spark, cfg).collect()
        assert (during.status, during.host, during.pid) == ("running", socket.gethostname(), os.getpid())
        raise RuntimeError("boom")
    (after,) = latest_runs(spark, cfg).collect()
    assert after.status == "failed" and "boom" in after.error


def test_a_step_refuses_a_date_whose_upstream_step_failed(spark, cfg):
    day = dt.date(2026, 5, 2)
    require_done(spark, cfg, "features", day, by="score")  # no ledger yet: nothing to vouch for
    with pytest.raises(RuntimeError), record_step(spark, cfg, "features", day):
        raise RuntimeError("features broke")
    with pytest.raises(StepNotDoneError, match="features for 2026-05-02 is recorded as failed"):
        require_done(spark, cfg, "features", day, by="score")
    with record_step(spark, cfg, "features", day):
        pass
    require_done(spark, cfg, "features", day, by="score")
