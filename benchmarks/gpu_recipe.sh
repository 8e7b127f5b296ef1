#!/usr/bin/env bash
# A molecule model from minutes of one GPU, in one call on an offline GPU machine: QM9 without H
# (DATA=qm9, the default) or MOSES's drug-like molecules (DATA=moses). Install from the carried
# wheels, train the graph denoiser under --time-budget, sample 10,000 molecules twice (raw: no
# guard, no repair, no rejection, for the model's own validity; and the chemist's default: guards
# and rejection, timed), count them with RDKit outside the library's metric code
# (benchmarks/count_molecules.py; off by default for MOSES, whose counts take minutes: run
# benchmarks/molecule_harness.py on the CPU), export the weights.
#
#   bash benchmarks/gpu_bring.sh [qm9|moses] [text]        # here, beforehand (fills .gpu/)
#   bash benchmarks/gpu_recipe.sh                          # there: carry .gpu, results in $OUT
#   DATA=moses bash benchmarks/gpu_recipe.sh
#
# Environment: DATA (qm9 | moses), OUT (results, default ./gpu_out), BUDGET (training seconds,
# default 420 for QM9, 300 for MOSES, whose training molecules are encoded first on THREADS=16
# processes: about 760 a second a core here, so MAX_TRAIN=600000 of its 1.58M, about 50 s, keeps
# the call under 9 minutes), TRAIN_FLAGS (extra `molecules train` flags; "auto" takes
# "--cuda-graphs" where the benchmark below measured it at least 10% faster than eager), BENCH=1
# (first run benchmarks/gpu.py's matmul, eager text step and molecule training sections: the
# figures, and what "auto" reads), COUNT=0/1, SAMPLES (default 10000), MODEL (the size flags),
# MAX_TRAIN (the first N training molecules only; MOSES default 600000), DTYPE (the export's
# storage type: float32 for QM9, bfloat16 for MOSES, under the catalogue's 20 MB), DEVICE
# (default cuda), INSTALL=0 (use the discdiff on PATH: a CPU smoke run of the recipe). Each stage has its own timeout and writes
# its log as it goes, so a cut run says how far it got. What comes back is four files (the
# device's limit is eight): results.tgz (logs, samples, counts; packed again after every stage),
# the exported model and its entry, and recipe.log. Smoke-run on the CPU for DATA=moses
# (DISCDIFF_CACHE a copy of .gpu/cache, INSTALL=0 DEVICE=cpu BUDGET=20 SAMPLES=40
# MAX_TRAIN=3000 THREADS=2 COUNT=1 and a one-layer MODEL): every stage rc 0 in 87 s.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-qm9}
OUT=${OUT:-$PWD/gpu_out}
case "$DATA" in
  qm9)  # DiGress's QM9 size: 8 layers, node 192, edge 64, 8 heads (3.97 M parameters)
    BUDGET=${BUDGET:-420}; COUNT=${COUNT:-1}; DTYPE=${DTYPE:-float32}
    MODEL=${MODEL:---layers 8 --node-dim 192 --edge-dim 64 --heads 8 --batch-size 512} ;;
  moses)  # graphs of up to 27 heavy atoms: a wider node stream, a smaller batch
    BUDGET=${BUDGET:-300}; COUNT=${COUNT:-0}; DTYPE=${DTYPE:-bfloat16}; MAX_TRAIN=${MAX_TRAIN-600000}
    MODEL=${MODEL:---layers 8 --node-dim 256 --edge-dim 64 --heads 8 --batch-size 256} ;;
  *) echo "DATA=$DATA: expected qm9 or moses" >&2; exit 2 ;;
esac
SAMPLES=${SAMPLES:-10000}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
MAX_TRAIN=${MAX_TRAIN:-}
THREADS=${THREADS:-16}
DEVICE=${DEVICE:-cuda}
INSTALL=${INSTALL:-1}
BENCH=${BENCH:-0}
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

# 2. train (encoding the training molecules first, on THREADS processes)
RUN=$WORK/run
ENCODE=120; [ "$DATA" = moses ] && ENCODE=240
# shellcheck disable=SC2086
stage train $((BUDGET + ENCODE)) discdiff molecules train --data "$DATA" --out "$RUN" $MODEL \
  --lr 5e-4 --warmup 500 --ema 0.999 --eval-every 0 --ckpt-every 5000 --log-every 100 \
  --time-budget "$BUDGET" --device "$DEVICE" --threads "$THREADS" --no-progress \
  ${MAX_TRAIN:+--max-train "$MAX_TRAIN"} $TRAIN_FLAGS || exit 1

# 3. sample: the model alone, then the chemist's default (guards + rejection)
stage sample_raw 120 discdiff molecules sample "$RUN" -n "$SAMPLES" --seed 0 --model-alone \
  --batch-size 2500 --device "$DEVICE" --no-progress --out "$WORK/raw.smi"
stage sample_default 120 discdiff molecules sample "$RUN" -n "$SAMPLES" --seed 0 \
  --batch-size 2500 --device "$DEVICE" --no-progress --out "$WORK/default.smi"

# 4. count with RDKit alone (validity, aromatic share, uniqueness, novelty against every split,
#    ring kinds, distances to the test molecules; benchmarks/count_molecules.py)
if [ "$COUNT" = 1 ]; then
  for kind in raw default; do
    stage "count_$kind" 150 "$PY" benchmarks/count_molecules.py "$WORK/$kind.smi" \
      --data "$DATA" --json "$WORK/count_$kind.json"
  done
fi

# 5. the checkpoint as one file (EMA weights, DTYPE) + its entry
MODEL_FILE=$OUT/${DATA}_gpu_model.safetensors
stage export 60 discdiff molecules export "$RUN" --out "$MODEL_FILE" --dtype "$DTYPE"
size=$(stat -c %s "$MODEL_FILE" 2>/dev/null || echo 0)
log "export: $size bytes as $DTYPE (the catalogue's limit is 20 MB a model)"
ls -l "$OUT" | tee -a "$OUT/recipe.log"
cp "$OUT/recipe.log" "$WORK/"
pack
