"""Pool the blocks of several fidelity.py runs of the same code and kinds, and summarise them
as fidelity.py does (median of per-block log ratios against P, distribution-free 95 %
interval). Usage: python pool.py RUN.json [RUN.json ...]"""

import json
import math
import sys
from pathlib import Path

from fidelity import median_interval


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    kinds = {run["kinds"] for run in runs}
    assert len(kinds) == 1, f"different kinds: {kinds}"
    rows = [row for run in runs for row in run["rows"]]
    summary = {}
    for kind in (k for k in kinds.pop() if k != "P"):
        mid, low, high = median_interval([math.log(r[kind] / r["P"]) for r in rows])
        summary[f"{kind}/P"] = {
            "median_pct": round(100 * (math.exp(mid) - 1), 2),
            "ci95_pct": [round(100 * (math.exp(x) - 1), 2) for x in (low, high)],
        }
    print(json.dumps({"runs": paths, "blocks": len(rows), "summary": summary}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
