# featcomp: the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup test test-fast demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[test,bench]"
	touch $@

setup: $(VENV)/.installed  ## create .venv and install featcomp with its test extras

test: setup  ## set everything up and run the whole test suite (what CI runs)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup  ## skip tests marked slow
	$(PY) -m pytest -q -m "not slow"

demo: setup  ## set everything up and run the main extraction job on demo clips (local Ray, local store)
	$(PY) -m pipelines.demo

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
