"""spark-submit entry point for the evaluate step: `spark-submit jobs/evaluate.py --date YYYY-MM-DD`.

Exit codes: 0 done, 99 skipped, 1 failed (see _entry.py).
"""

import sys

from _entry import run_step

if __name__ == "__main__":
    sys.exit(run_step("evaluate", __doc__))
