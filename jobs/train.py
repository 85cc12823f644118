"""spark-submit entry point for the train step: `spark-submit jobs/train.py --date YYYY-MM-DD`.

Honours ``train.schedule`` (exit 99 when not due; --force trains anyway); exit 99 also
when there is nothing to train on yet.

Exit codes: 0 done, 99 skipped, 1 failed (see _entry.py).
"""

import sys

from _entry import run_step

if __name__ == "__main__":
    sys.exit(run_step("train", __doc__))
