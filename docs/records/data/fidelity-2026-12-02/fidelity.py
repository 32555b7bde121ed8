"""Harness fidelity (issue 19, item 5): what a measured round costs over a plain ``generate``.

In one process, blocks of three generates of the same batch in rotating order (all six orders
of P, H, M in turn): P a plain timed generate (no hook, no memory tracker), H the same with the
per-step timing hook (``StepClock``, a logits processor), M a full measured round
(``GenerationRunner.measure``: hook, memory tracker, everything a round does). Per block the
log ratios against P; their median with a distribution-free 95 % interval (order statistics
of the binomial). Optional kinds (4th argument, default PHM): L, a plain generate with a no-op
logits processor (what the step clock's dispatch cost while it was a logits processor, before
2026-12-02's second session). Usage: python fidelity.py MODEL BLOCKS OUT.json [KINDS]
"""

import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

from scipy.stats import binom

from perf.config.model import ModelSpec
from perf.config.prompts import load_prompts, select_prompts
from perf.config.run import RunConfig, SamplingParams, Workload
from perf.measure import backends
from perf.measure.batch import prepare_batch
from perf.measure.device import DeviceInfo
from perf.measure.runner import GenerationRunner

REPO = Path(__file__).resolve().parents[4]


def median_interval(values, confidence=0.95):
    """The median and a distribution-free interval for it (order statistics)."""
    xs = sorted(values)
    n = len(xs)
    k = int(binom.ppf((1 - confidence) / 2, n, 0.5))
    return statistics.median(xs), xs[max(k - 1, 0)], xs[min(n - k, n - 1)]


class NoOp:
    """A logits processor that returns the scores: the dispatch cost alone."""

    def __call__(self, input_ids, scores):
        return scores


def plain_with_processor(loaded, batch, sampling):
    """P's generate with one no-op logits processor (the workload is greedy: the seed is P's)."""
    import torch
    from transformers import LogitsProcessorList

    torch.manual_seed(sampling.seed)
    with torch.inference_mode():
        started = time.perf_counter()
        loaded.model.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            logits_processor=LogitsProcessorList([NoOp()]),
            **sampling.generate_kwargs(),
        )
        return (time.perf_counter() - started) * 1e3


def main(model: str, blocks: int, out: str, chosen: str = "PHM") -> None:
    spec = ModelSpec.resolve(model, REPO, "fidelity")
    loaded = backends.load(spec, RunConfig("baseline"), DeviceInfo("cpu"))
    workload = Workload("short-b1", ("short",), 1, SamplingParams(max_new_tokens=32))
    prompts = load_prompts(REPO / "fixtures" / "prompts.jsonl")
    batch = prepare_batch(loaded.tokenizer, select_prompts(prompts, workload), "cpu")
    runner = GenerationRunner(loaded, workload, batch)
    kinds = {
        "P": lambda: runner._generate(with_clock=False)[1] * 1e3,
        "H": lambda: runner._generate(with_clock=True)[1] * 1e3,
        "M": lambda: runner.measure().e2e_ms,
        "L": lambda: plain_with_processor(loaded, batch, workload.sampling),
    }
    kinds = {k: kinds[k] for k in chosen}
    for _ in range(3):
        runner.measure()
    orders = list(itertools.permutations(chosen))
    rows = []
    started = time.perf_counter()
    for i in range(blocks):
        order = orders[i % len(orders)]
        rows.append({"order": "".join(order), **{k: kinds[k]() for k in order}})
    wall = time.perf_counter() - started
    summary = {}
    for kind in (k for k in chosen if k != "P"):
        logs = [math.log(r[kind] / r["P"]) for r in rows]
        mid, low, high = median_interval(logs)
        summary[f"{kind}/P"] = {
            "median_pct": 100 * (math.exp(mid) - 1),
            "ci95_pct": [100 * (math.exp(low) - 1), 100 * (math.exp(high) - 1)],
        }
    spread = [math.log(r["P"] / statistics.median(x["P"] for x in rows)) for r in rows]
    result = {
        "model": spec.label,
        "blocks": blocks,
        "kinds": chosen,
        "wall_s": round(wall, 1),
        "plain_median_ms": statistics.median(r["P"] for r in rows),
        "plain_sd_pct": 100 * statistics.stdev(spread),
        "summary": summary,
        "rows": rows,
    }
    Path(out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:5])
