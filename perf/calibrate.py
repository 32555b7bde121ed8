"""``python -m perf.calibrate`` is ``genperf calibrate`` (perf/cli/calibrate.py)."""

import sys

from perf.cli.calibrate import main

if __name__ == "__main__":
    sys.exit(main())
