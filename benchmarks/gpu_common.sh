# Shared by the GPU recipes (sourced): logging, stages with their own timeouts, packing the
# results into at most a few files (the device returns at most eight), and the offline install.
# Expects OUT (the results folder) and INSTALL (1: install from .gpu/, 0: use the discdiff on
# PATH); sets WORK (logs, samples, runs; packed into $OUT/results.tgz after every stage) and PY.
mkdir -p "$OUT"
WORK=$(mktemp -d)
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/recipe.log"; }
pack() {
  tar czf "$WORK.tgz" -C "$WORK" --exclude='*/checkpoints' --exclude='*.safetensors' . &&
    mv -f "$WORK.tgz" "$OUT/results.tgz"
}
stage() {  # stage NAME SECONDS CMD...: run with a timeout, log to $WORK/NAME.log, pack
  local name=$1 limit=$2; shift 2
  log "$name: $*"
  local start=$SECONDS
  timeout "$limit" "$@" > >(tee "$WORK/$name.log") 2>&1
  local rc=$?
  log "$name: rc $rc in $((SECONDS - start)) s"
  cp "$OUT/recipe.log" "$WORK/"
  pack
  return $rc
}
install_offline() {  # what the image lacks (RDKit) and the project, from local files only
  PY=python3
  if [ "$INSTALL" = 1 ]; then
    local W
    W=$(mktemp -d)
    stage install 120 bash -c "python3 -m pip install -q --no-index --no-deps --no-compile \
      --target $W/site .gpu/whl/*.whl && python3 -m pip install -q --no-index --no-deps \
      --no-build-isolation --no-compile --target $W/site ." || exit 1
    export PYTHONPATH=$W/site PATH=$W/site/bin:$PATH DISCDIFF_CACHE=$W/cache
    cp -r .gpu/cache "$DISCDIFF_CACHE"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/recipe.log" 2>&1
  else
    PY=$(dirname "$(command -v discdiff)")/python
  fi
  export PYTHONUNBUFFERED=1
}
