#!/usr/bin/env bash
# Shakespeare characters from minutes of one GPU, in one call on an offline GPU machine: absorbing
# diffusion against its autoregressive yardstick of the same size and the same training time,
# beside an add-one bigram, on the test split and out of domain (Milton, from the same package),
# bits per character with standard errors (benchmarks/text.py); the diffusion model exported.
#
#   bash benchmarks/gpu_bring.sh                        # here, beforehand (fills .gpu/)
#   bash benchmarks/gpu_text_recipe.sh                  # there: carry .gpu, results in $OUT
#
# Environment: OUT (default ./gpu_text_out), MINUTES (training per model, default 3.5: both
# models fit one call of 9 minutes with their evaluations), MODEL (the size flags), OOD (the
# out-of-domain corpus: default milton; a path, or empty for none), DEVICE (default cuda),
# INSTALL=0 (a CPU smoke run with the discdiff on PATH). Results: results.tgz (logs,
# results.json/txt) and shakespeare_model.safetensors.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_text_out}
MINUTES=${MINUTES:-3.5}
MODEL=${MODEL:---layers 6 --d-model 384 --heads 6 --seq-len 256 --batch-size 64}
OOD=${OOD-milton}
DEVICE=${DEVICE:-cuda}
INSTALL=${INSTALL:-1}
# shellcheck source=benchmarks/gpu_common.sh
source benchmarks/gpu_common.sh
install_offline

# shellcheck disable=SC2086
stage bench $((2 * ${MINUTES%.*} * 60 + 240)) "$PY" benchmarks/text.py --corpus shakespeare \
  --models absorbing,ar --minutes "$MINUTES" --device "$DEVICE" $MODEL --eval-samples 4 \
  --bigram ${OOD:+--ood "$OOD"} --threads "${THREADS:-8}" --out "$WORK/bench"
stage export 60 discdiff task export "$WORK/bench/absorbing" \
  --out "$OUT/shakespeare_model.safetensors"
ls -l "$OUT" | tee -a "$OUT/recipe.log"
cp "$OUT/recipe.log" "$WORK/"
pack
