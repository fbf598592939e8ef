#!/usr/bin/env bash
# The committed FT-Bench baseline (docs/results/ftbench/): two CPU tasks x {llm, optuna, random} x 3 seeds,
# 10 trials each, 2 executors x 1 thread, sized so the whole run takes under an hour on 2 cores.
# Re-running continues where it stopped (finished searches are skipped).
set -euo pipefail
HOME_DIR=${1:-.trex-bench}
OUT=${2:-docs/results/ftbench}
BIN=${BIN:-.venv/bin}
common=(--proposers llm,optuna,random --seeds 3 --budget-trials 10 --parallel 2 --threads 1 --tag baseline
        --home "$HOME_DIR")
start=$(date +%s)
"$BIN/ftbench" run --tasks arith-sub --steps 150 --batch-size 32 --eval-limit 200 "${common[@]}"
"$BIN/ftbench" run --tasks tickets --steps 12 --batch-size 4 --eval-limit 50 "${common[@]}"
echo "run wall seconds: $(( $(date +%s) - start ))" >&2
"$BIN/ftbench" report --tag baseline --home "$HOME_DIR" --out "$OUT"
