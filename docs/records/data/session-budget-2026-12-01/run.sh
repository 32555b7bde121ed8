#!/bin/bash
# issue 17 campaign 2: two more baseline sessions (pooled to 5), 10 unchanged sessions (CI=true),
# injected 20 % and 50 % slowdowns, two sessions each. Frozen copy of the committed tree.
cd /tmp/frozen
export PYTHONPATH=/tmp/frozen HF_HUB_OFFLINE=1
B="/work/main/.venv/bin/pytest --benchmark tests/benchmarks --perf-rounds 3 -p no:cacheprovider -q"
log=/tmp/c2/log.txt
for i in 4 5; do
  s=$(date +%s); CI=true $B --perf-report /tmp/c2/base-$i --perf-save-baseline --perf-baseline-sessions 5 > /tmp/c2/base-$i.out 2>&1; rc=$?
  echo "base-$i rc=$rc $(( $(date +%s)-s ))s $(date +%T)" >> $log
done
for i in $(seq 1 10); do
  s=$(date +%s); CI=true $B --perf-report /tmp/c2/run-$i --perf-history /tmp/c2/history.jsonl > /tmp/c2/run-$i.out 2>&1; rc=$?
  echo "run-$i rc=$rc $(( $(date +%s)-s ))s $(date +%T)" >> $log
done
for f in 0.2 0.5; do for i in 1 2; do
  s=$(date +%s); CI=true $B --perf-inject-slowdown $f --perf-report /tmp/c2/inject-$f-$i --perf-history /tmp/c2/history.jsonl > /tmp/c2/inject-$f-$i.out 2>&1; rc=$?
  echo "inject-$f-$i rc=$rc $(( $(date +%s)-s ))s $(date +%T)" >> $log
done; done
echo done >> $log
