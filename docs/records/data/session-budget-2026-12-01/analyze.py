"""Issue 17 campaign analysis (per-session budget): failures per unchanged session, the
per-session false-alarm rate the calibration predicts, smallest detectable regressions at that
rate, injected slowdowns caught. Usage: analyze.py DIR BASELINES"""
import collections, json, statistics, sys
from pathlib import Path
sys.path.insert(0, "/work/main")
from perf.cli.calibrate import cases_from_reports
from perf.config.pyproject import load_settings
from perf.judge.calibration import calibrate_metric, session_false_alarm
from perf.judge.drift import budget_of, session_drift
from perf.judge.tolerance import overrides_for, tolerance_for
from perf.measure.fingerprint import Fingerprint
from perf.metrics import GATED
from perf.store.baselines import BaselineStore

C, BASE = Path(sys.argv[1]), Path(sys.argv[2])
OVR = load_settings(Path("/work/main/pyproject.toml")).tolerance_overrides(False)
log = (C / "log.txt").read_text()
print(log)
def report(name):
    return json.loads((C / name / "report.json").read_text())
slug = report("run-1")["environment"]["hardware"]["slug"]
store = BaselineStore(BASE, Fingerprint(hardware={"slug": slug}, software={}))
runs = sorted((p.name for p in C.glob("run-*") if (p / "report.json").exists()), key=lambda n: int(n.split("-")[1]))
reports = [report(n) for n in runs]
sessions = cases_from_reports(reports, store)
summary = session_drift(sessions, is_cuda=False, overrides=OVR)
print(f"unchanged sessions {len(runs)}: failed (re-judged) {summary.failed_sessions}, on first measurement {summary.failed_first} ({summary.regressed_first} verdicts)")
for name, rep in zip(runs, reports):
    kinds = collections.Counter(v for r in rep["results"] for v in r.get("verdicts", {}).values())
    print(f"  {name}: as the session judged it: {dict(kinds)}")
per_metric = collections.defaultdict(list)
bounds, limits = [], collections.defaultdict(list)
for cases in sessions:
    budget = budget_of(cases)
    rates = []
    for case in cases:
        for m in GATED:
            if m not in case.metrics or m not in case.baseline:
                continue
            c = calibrate_metric(case.metrics[m], case.baseline[m], tolerance_for(m, False, overrides_for(OVR, case.config)), 3.0, case.baseline_sessions, budget, case.config)
            rates.append(c.false_alarm_pct / 100)
            per_metric[m].append(c.detectable_pct)
            limits[(case.config, m)].append(c.limit_pct)
    bounds.append(session_false_alarm(rates))
    last_budget = budget
print(f"comparisons per session: {last_budget.comparisons}, alpha each {last_budget.alpha:.5f}")
lo = statistics.median(b[0] for b in bounds); hi = statistics.median(b[1] for b in bounds)
print(f"predicted per-session false-alarm rate (median over sessions): {100*lo:.2f}% to {100*hi:.2f}%; max upper {100*max(b[1] for b in bounds):.2f}%")
for m, xs in per_metric.items():
    found = [x for x in xs if x is not None]
    print(f"detectable {m}: median {statistics.median(found) if found else None}, range {min(found) if found else None}-{max(found) if found else None}, none-at-any-size {len(xs)-len(found)} of {len(xs)}")
print("session limits (%, worse direction) per config and metric, from the budget:")
for (cfg, m), xs in sorted(limits.items()):
    print(f"  {cfg:10s} {m:22s} {xs[0]}")
for sd_key, s in sorted(last_budget.spreads.items()):
    print(f"  spread {sd_key}: sd {s.sd:.3f} df {s.df}")
inj = sorted(p.name for p in C.glob("inject-*") if (p / "report.json").exists())
for name in inj:
    rep = report(name)
    caught = [r["case_id"] if "case_id" in r else r["config"] + "-" + r["workload"] for r in rep["results"] if any(v == "regressed" for v in r.get("verdicts", {}).values())]
    ttft = [r["config"] + "-" + r["workload"] for r in rep["results"] if r.get("verdicts", {}).get("ttft_ms") == "regressed"]
    print(f"{name}: cases caught {len(caught)} of {len(rep['results'])}; TTFT regressed in {len(ttft)}: {caught}")
