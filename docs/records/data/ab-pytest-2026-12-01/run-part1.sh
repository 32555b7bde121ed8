#!/bin/bash
# Issue 18 campaign: pytest --benchmark --perf-reference, reference = candidate = HEAD (frozen copies)
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
for cycle in 1 2 3 4 5; do
  for slow in 0 0.05 0.10 0.20 0; do
    i=$((i+1)); run s$(printf %02d $i) $slow --perf-configs baseline --perf-workloads short-b1
  done
done
run scale-p20 0 --perf-configs baseline --perf-workloads short-b1 --perf-ab-pairs 20
run scale-w2 0 --perf-configs baseline --perf-workloads short-b1,padded-b4
run scale-p7 0 --perf-configs baseline --perf-workloads short-b1 --perf-ab-pairs 7 --perf-ab-restarts 1
echo done >> /tmp/abc/sessions.txt
