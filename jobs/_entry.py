"""Shared argument parsing for the spark-submit entry points (kept tiny on purpose)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging

from recs.config import Config, load_config


def parse(description: str) -> tuple[Config, dt.date, argparse.Namespace]:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--date", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--lakehouse", help="lakehouse root URI")
    p.add_argument("--raw", help="raw input root URI")
    p.add_argument("--force", action="store_true", help="nightly only: redo steps that already succeeded")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return load_config(args.config, lakehouse=args.lakehouse, raw=args.raw), args.date, args
