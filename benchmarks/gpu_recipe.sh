#!/usr/bin/env bash
# The QM9 model from minutes of one GPU, in one call on an offline GPU machine:
# install from the carried wheels, train the DiGress-size graph denoiser under --time-budget,
# sample 10,000 molecules twice (raw: no guard, no repair, no rejection, for the model's own
# validity; and the chemist's default: guards and rejection, timed), count them with RDKit
# outside the library's metric code (benchmarks/count_molecules.py), export the weights.
#
#   bash benchmarks/gpu_bring.sh                           # here, beforehand (fills .gpu/)
#   bash benchmarks/gpu_recipe.sh                          # there: carry .gpu, results in $OUT
#
# Environment: OUT (results, default ./gpu_out), BUDGET (training seconds, default 420),
# TRAIN_FLAGS (extra `molecules train` flags; "auto" takes "--cuda-graphs" where the benchmark
# below measured it at least 10% faster than eager), BENCH=1 (first run benchmarks/gpu.py's
# matmul, eager text step and molecule training sections: the figures, and what "auto" reads),
# COUNT=0 (skip the RDKit counts: do them later on the CPU from the .smi files), SAMPLES
# (default 10000), MODEL (the size flags), DEVICE (default cuda), INSTALL=0 (use the discdiff on
# PATH: a CPU smoke run of the recipe). Each stage has its own timeout and writes its log as it
# goes, so a cut run says how far it got. What comes back is at most three files (the device's
# limit is eight): results.tgz (logs, figures, samples, metrics; packed again after every
# stage), the exported model, and recipe.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
BUDGET=${BUDGET:-420}
SAMPLES=${SAMPLES:-10000}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
MODEL=${MODEL:---layers 8 --node-dim 192 --edge-dim 64 --heads 8 --batch-size 512}
DEVICE=${DEVICE:-cuda}
INSTALL=${INSTALL:-1}
BENCH=${BENCH:-0}
COUNT=${COUNT:-1}
# shellcheck source=benchmarks/gpu_common.sh
source benchmarks/gpu_common.sh

# 1. install what the image lacks (RDKit) and the project, from local files only
install_offline

# 1b. the benchmark sections that say how fast the step is (and which variant to train with)
if [ "$BENCH" = 1 ]; then
  QUICK=""; [ "$DEVICE" = cuda ] || QUICK=--quick
  stage bench 160 "$PY" benchmarks/gpu.py --device "$DEVICE" $QUICK --out "$WORK/gpu.json" \
    --sections matmul,train,molecule_train \
    --skip train.compiled,train.graphs,molecule_train.compiled
fi
if [ "$TRAIN_FLAGS" = auto ]; then
  TRAIN_FLAGS=$("$PY" -c "
import json, sys
try:
    m = json.load(open(sys.argv[1])).get('molecule_train', {})
except (OSError, ValueError):
    m = {}
eager, graphs = m.get('resident_graphs_per_s', 0.0), m.get('cuda_graphs_graphs_per_s', 0.0)
print('--cuda-graphs' if graphs > 1.1 * eager > 0 else '')" "$WORK/gpu.json")
  log "auto: TRAIN_FLAGS='$TRAIN_FLAGS'"
fi

# 2. train: DiGress's QM9 size (8 layers, node 192, edge 64, 8 heads), batch 512, bf16
RUN=$WORK/run
# shellcheck disable=SC2086
stage train $((BUDGET + 120)) discdiff molecules train --data qm9 --out "$RUN" $MODEL \
  --lr 5e-4 --warmup 500 --ema 0.999 --eval-every 0 --ckpt-every 5000 --log-every 100 \
  --time-budget "$BUDGET" --device "$DEVICE" --no-progress $TRAIN_FLAGS || exit 1

# 3. sample: the model alone, then the chemist's default (guards + rejection)
stage sample_raw 120 discdiff molecules sample "$RUN" -n "$SAMPLES" --seed 0 \
  --no-valence-guard --no-motif-guard --no-repair --no-reject --keep-invalid \
  --batch-size 2500 --device "$DEVICE" --no-progress --out "$WORK/raw.smi"
stage sample_default 120 discdiff molecules sample "$RUN" -n "$SAMPLES" --seed 0 \
  --batch-size 2500 --device "$DEVICE" --no-progress --out "$WORK/default.smi"

# 4. count with RDKit alone (validity, aromatic share, uniqueness, novelty against all of QM9)
if [ "$COUNT" = 1 ]; then
  for kind in raw default; do
    stage "count_$kind" 120 "$PY" benchmarks/count_molecules.py "$WORK/$kind.smi" \
      --json "$WORK/count_$kind.json"
  done
fi

# 5. the checkpoint as one file (EMA weights, fp32: 3.97 M parameters = 15.9 MB) + its entry
stage export 60 discdiff molecules export "$RUN" --out "$OUT/qm9_gpu_model.safetensors"
size=$(stat -c %s "$OUT/qm9_gpu_model.safetensors" 2>/dev/null || echo 0)
log "export: $size bytes (the limit is 16 MiB = 16777216; DiGress's size in fp32: 15934440)"
ls -l "$OUT" | tee -a "$OUT/recipe.log"
cp "$OUT/recipe.log" "$WORK/"
pack
