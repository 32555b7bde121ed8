"""Issue 18's campaign: `pytest --benchmark --perf-reference` sessions, reference = candidate =
the same commit (frozen copies), planted slowdowns on the candidate side only.

Usage: PYTHONPATH=<repo> python analyze.py DATA_DIR  (DATA_DIR: sessions.txt and <name>.json,
each a session's report.json). Sessions s*: part 1; t*: part 2, after the worker's fix (an
injected slowdown calibrated at the first round, not while both sides load): planted sessions
of part 1 are shown, not counted. Re-judges the recorded pairs with genperf's own paired
verdict (perf.judge.paired) at the shipped tolerances and at the tolerance that keeps false
alarms at <= 1 % per session, from the unchanged sessions' spread.
"""

import json
import math
import statistics
import sys
from pathlib import Path

from scipy.stats import norm, t

from perf.judge.paired import AB_METRICS, AB_TOLERANCES, paired_verdict, worse_log_ratios

data = Path(sys.argv[1])
SESSION_FA = 0.01  # per session, shared over the metrics of a case


def sessions():
    for line in (data / "sessions.txt").read_text().splitlines():
        if line == "done":
            continue
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        name = line.split()[0]
        report = json.loads((data / f"{name}.json").read_text())
        for result in report["results"]:
            paired = result.get("paired")
            if paired:
                yield name, float(fields["slow"]), int(fields["wall_s"]), result, paired


def sides(paired, metric):
    ref = [float(r[metric]) for r in paired["reference"]["rounds"]]
    cand = [float(r[metric]) for r in paired["candidate"]["rounds"]]
    return ref, cand


def median_worse(paired, metric):
    """Median over pairs of log(candidate/reference), + = worse."""
    return statistics.median(worse_log_ratios(metric, *sides(paired, metric)))


rows = list(sessions())
print("session slow pairs wall_s ab_s | median paired change % per metric (+ = worse) | verdicts")
for name, slow, wall, result, paired in rows:
    n = len(paired["reference"]["rounds"])
    changes = " ".join(
        f"{m.split('_')[0]}={100 * (math.exp(median_worse(paired, m)) - 1):+.1f}"
        for m in AB_METRICS
    )
    verdicts = ",".join(v["verdict"] for v in paired["verdicts"])
    print(f"{name} {slow:.2f} {n} {wall} {paired['wall_s']:.0f} | {changes} | {verdicts}"
          f" outputs={paired['outputs']} workload={result['workload']}")

unchanged = [
    p for name, slow, _, r, p in rows if slow == 0 and name[0] in "st" and len(p["reference"]["rounds"]) == 10
    and r["workload"] == "short-b1" and not name.startswith("scale")
]
print(f"\nunchanged 10-pair sessions: {len(unchanged)}")
fails = [
    name for name, slow, _, r, p in rows
    if slow == 0 and any(v["verdict"] == "regressed" for v in p["verdicts"])
]
print(f"unchanged sessions failed at the shipped tolerances: {len(fails)} {fails}")
m = len(AB_METRICS)
alpha = SESSION_FA / m
derived = {}
print(f"\nper metric: sd of the session's median log ratio (unchanged), the <= {SESSION_FA:.0%}"
      f"/session tolerance (one-sided prediction bound, alpha {alpha:.4f} per metric),"
      " smallest detectable at 95 % power")
for metric in AB_METRICS:
    x = [median_worse(p, metric) for p in unchanged]
    n = len(x)
    sd = statistics.stdev(x)
    bound = statistics.mean(x) + t.ppf(1 - alpha, n - 1) * sd * math.sqrt(1 + 1 / n)
    detect = bound + norm.ppf(0.95) * sd
    derived[metric] = 100 * (math.exp(bound) - 1)
    worst = max(abs(v) for v in x)
    print(f"  {metric}: mean {100 * statistics.mean(x):+.2f} %, sd {100 * sd:.2f} %,"
          f" worst |change| {100 * (math.exp(worst) - 1):.1f} %, tolerance"
          f" {derived[metric]:.1f} %, detectable {100 * (math.exp(detect) - 1):.1f} %"
          f" (shipped tolerance {AB_TOLERANCES[metric]:g} %)")


def judged(paired, tolerances):
    return {
        metric: paired_verdict(metric, *sides(paired, metric), tolerances[metric]).verdict
        for metric in AB_METRICS
    }


print("\ndetections per planted size (a session is caught when any metric is regressed):")
for label, tolerances in (("shipped", AB_TOLERANCES), ("<=1%/session", derived)):
    by_size = {}
    for name, slow, _, r, p in rows:
        if name.startswith("scale") or (name.startswith("s") and slow):
            continue  # part 1's planted sessions: calibrated while both sides loaded
        verdicts = judged(p, tolerances)
        caught = any(v == "regressed" for v in verdicts.values())
        per_metric = [m for m, v in verdicts.items() if v == "regressed"]
        by_size.setdefault(slow, []).append((caught, per_metric))
    line = "; ".join(
        f"{size:.0%}: {sum(c for c, _ in v)} of {len(v)}"
        + (f" (metrics: {sorted({m for _, ms in v for m in ms})})" if size else "")
        for size, v in sorted(by_size.items())
    )
    print(f"  {label}: {line}")
