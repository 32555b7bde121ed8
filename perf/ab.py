"""``python -m perf.ab`` is ``genperf ab`` (perf/cli/ab.py)."""

import sys

from perf.cli.ab import main

if __name__ == "__main__":
    sys.exit(main())
