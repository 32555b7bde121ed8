#!/bin/bash
# Issue 18 campaign, part 2: the worker calibrates an injected slowdown at its first round
cd /tmp/cand
run() { # name slowdown extra-args...
  local name=$1 slow=$2; shift 2
  local t0=$(date +%s)
  env CI=true PYTHONPATH=/tmp/cand HF_HUB_OFFLINE=1 /work/main/.venv/bin/pytest --benchmark tests/benchmarks \
    --perf-reference /tmp/ref --perf-report /tmp/abc/$name --perf-rounds 3 -q -p no:cacheprovider \
    --perf-inject-slowdown $slow "$@" > /tmp/abc/$name.log 2>&1
  local rc=$?
  echo "$name slow=$slow rc=$rc wall_s=$(( $(date +%s) - t0 )) start=$(date -u -d @$t0 +%H:%M:%S) args=$*" >> /tmp/abc/sessions.txt
}
i=0
for slow in 0 0.05 0.10 0.20 0.05 0.10 0.20 0 0.05 0.10 0.20 0.05 0.10 0.20 0 0.05 0.10 0.20; do
  i=$((i+1)); run t$(printf %02d $i) $slow --perf-configs baseline --perf-workloads short-b1
done
run scale-p20 0 --perf-configs baseline --perf-workloads short-b1 --perf-ab-pairs 20
run scale-w2 0 --perf-configs baseline --perf-workloads short-b1,padded-b4
echo done >> /tmp/abc/sessions.txt
