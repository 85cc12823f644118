"""spark-submit entry point for the features step: `spark-submit jobs/features.py --date YYYY-MM-DD`.

Exit codes: 0 done, 99 skipped, 1 failed (see _entry.py).
"""

import sys

from _entry import run_step

if __name__ == "__main__":
    sys.exit(run_step("features", __doc__))
