"""spark-submit entry point for a whole night: `spark-submit jobs/nightly.py --date YYYY-MM-DD`.

Runs ingest -> features -> train (when due) -> score -> evaluate, skipping steps already
recorded as succeeded for the date (unless --force); exits non-zero when a step fails.
"""

import sys

from _entry import parse

from recs.session import get_spark


def main() -> int:
    from recs.pipeline import nightly

    cfg, date, args = parse(__doc__)
    report = nightly(get_spark(cfg), cfg, date, force=args.force)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
