"""spark-submit entry point for the train step: `spark-submit jobs/train.py --date YYYY-MM-DD`.

A night with nothing to train on (no validation day yet) logs why and exits 0.
"""

import logging

from _entry import parse

from recs.session import get_spark


def main() -> None:
    from recs import train as stage
    from recs.ledger import StepSkipped

    cfg, date, _ = parse(__doc__)
    try:
        stage.run(get_spark(cfg), cfg, date)
    except StepSkipped as exc:
        logging.getLogger("recs").warning("train %s skipped: %s", date, exc)


if __name__ == "__main__":
    main()
