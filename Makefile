# Set-up and checks. Every target creates .venv if missing; torch is pinned to the
# local CPU wheel first so that no multi-GB CUDA build is pulled.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The second CI job: Python 3.12 with ArviZ 1.x in its own venv. Torch 2.13.0 for 3.12 is not on
# local disk, so pip downloads PyPI's CUDA build (about 1.3 GB; a 5.3 GB venv).
PY312 ?= $(shell pyenv root 2>/dev/null)/versions/3.12.1/bin/python
VENV312 := .venv312
BIN312 := $(VENV312)/bin
STAMP312 := $(VENV312)/.installed

.PHONY: demo test test-slow test-py312 lint format install install-py312 clean bench bench-training bench-posteriors bench-models docs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[test,docs]"
	touch $(STAMP)

install: $(STAMP)

$(BIN312)/python:
	@test -x "$(PY312)" || { echo "make test-py312 needs Python 3.12: not found at '$(PY312)'" \
		"(pyenv install 3.12.1, or pass PY312=/path/to/python3.12)" >&2; exit 1; }
	$(PY312) -m venv $(VENV312)
	$(BIN312)/pip install --upgrade pip

$(STAMP312): $(BIN312)/python pyproject.toml
	$(BIN312)/pip install torch==2.13.0
	$(BIN312)/pip install -e ".[test,docs]" "arviz>=1"
	touch $(STAMP312)

install-py312: $(STAMP312)

demo: $(STAMP)
	$(BIN)/pyro-ebm demo

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-py312: $(STAMP312)
	$(BIN312)/python -c "import sys, arviz; assert sys.version_info >= (3, 12) and int(arviz.__version__.split('.')[0]) >= 1"
	$(BIN312)/python -m pytest -m "not slow" -q -p no:cacheprovider

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(VENV312) build *.egg-info

bench: $(STAMP)
	$(BIN)/python bench/samplers.py
	$(BIN)/python bench/suite.py

bench-training: $(STAMP)
	$(BIN)/python bench/training.py

bench-models: $(STAMP)
	cd bench && ../$(BIN)/python vectorized_models.py

bench-posteriors: $(STAMP)
	cd bench && ../$(BIN)/python posteriors.py

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html
