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

demo: $(STAMP)
	$(PY) -m discdiff.cli.main demo

lint: $(STAMP)
	$(VENV)/bin/ruff check discdiff cli datasets tests benchmarks examples
	$(VENV)/bin/ruff format --check discdiff cli datasets tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/processes.py

clean:
	rm -rf $(VENV) build *.egg-info
