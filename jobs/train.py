"""spark-submit entry point for the train step: `spark-submit jobs/train.py --date YYYY-MM-DD`."""

from _entry import parse

from recs.session import get_spark


def main() -> None:
    from recs import train as stage

    cfg, date, _ = parse(__doc__)
    stage.run(get_spark(cfg), cfg, date)


if __name__ == "__main__":
    main()
