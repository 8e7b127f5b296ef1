# Set-up and entry points. Both `make test` and `make demo` create .venv and install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-slow demo lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# The chemist's job: sample molecules from the shipped QM9 checkpoint; leaves an SDF and a PNG grid.
demo: $(STAMP)
	$(VENV)/bin/discdiff molecules sample -n 100 --seed 0 --out demo_out/mols.sdf --grid demo_out/grid.png

lint: $(STAMP)
	$(VENV)/bin/ruff check discdiff cli datasets tests benchmarks examples
	$(VENV)/bin/ruff format --check discdiff cli datasets tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/processes.py

clean:
	rm -rf $(VENV) build *.egg-info
