"""``python -m perf.history`` is ``genperf history`` (perf/cli/history.py)."""

import sys

from perf.cli.history import main

if __name__ == "__main__":
    sys.exit(main())
