#!/usr/bin/env bash
# Reproduces the shipped checkpoint (reference_model/checkpoint) in three seeded stages, single-threaded
# (about 40 min of wall time on the 2-core CPU machine). Why each stage: reference_model/README.md, "Fourth round".
#   bash reference_model/recipe.sh [OUT_DIR]     # default: reference_model/checkpoint
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-reference_model/checkpoint}"
work="$(mktemp -d)"
aids=(--patch-aux 1 --position-aux 1 --attention-aux 1)

# 1. Colour questions alone for 600 steps, then all six types; the attention aid routes "?" to the asked cells.
python3 reference_model/train.py --out "$work/stage1" --steps 3000 --lr 1e-3 "${aids[@]}" \
    --warm-types color --warm-steps 600 --eval-every 500
# 2. A second cosine schedule on fresh training samples.
python3 reference_model/train.py --out "$work/stage2" --init-from "$work/stage1" --seed 1 --steps 3000 --lr 7e-4 \
    "${aids[@]}" --eval-every 500
# 3. Relation questions alone for 500 steps (the type still at chance after stage 2), then all types again.
python3 reference_model/train.py --out "$out" --init-from "$work/stage2" --seed 2 --steps 1500 --lr 5e-4 \
    --warmup 50 "${aids[@]}" --warm-types relation --warm-steps 500 --eval-every 250
for stage in 1 2; do
    cp "$work/stage$stage/training_log.json" "$out/training_log_stage$stage.json"
done
rm -rf "$work"
