"""spark-submit entry point for a whole night: `spark-submit jobs/nightly.py --date YYYY-MM-DD`.

Runs ingest -> features -> train (when due) -> score -> evaluate, skipping steps already
recorded as succeeded for the date (unless --force). Exit codes: 0 done, 1 a step failed,
3 degraded (training failed; recommendations were written with the current model), 4 unhealthy.
"""

import sys

from _entry import EXIT_DEGRADED, EXIT_FAILED, EXIT_OK, EXIT_UNHEALTHY, parse, session


def main() -> int:
    from recs.pipeline import nightly

    cfg, date, args = parse(__doc__)
    report = nightly(session(cfg), cfg, date, force=args.force)
    if not report.ok:
        return EXIT_FAILED
    if report.unhealthy:
        return EXIT_UNHEALTHY
    return EXIT_DEGRADED if report.degraded else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
