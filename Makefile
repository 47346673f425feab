# featcomp: the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup test test-fast reader-check demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[all,test,bench]"
	touch $@

setup: $(VENV)/.installed  ## create .venv and install featcomp with every extra ([all]) and the test extras

test: setup  ## set everything up and run the whole test suite (what CI runs)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup  ## skip tests marked slow
	$(PY) -m pytest -q -m "not slow"

READER_VENV ?= $(or $(TMPDIR),/tmp)/featcomp-reader-venv
reader-check:  ## install the plain reader (no extras) into a fresh venv and read the golden stores without torch
	rm -rf $(READER_VENV)
	$(PYTHON) -m venv $(READER_VENV)
	$(READER_VENV)/bin/python -m pip install -q .
	cd $(READER_VENV) && $(READER_VENV)/bin/python $(CURDIR)/scripts/check_reader.py \
		$(CURDIR)/tests/fixtures/store/golden $(CURDIR)/tests/fixtures/store/golden_levels
	du -sh $(READER_VENV)/lib/python*/site-packages
	rm -rf $(READER_VENV)

demo: setup  ## set everything up and run the main extraction job on demo clips (local Ray, local store)
	$(PY) -m featcomp.pipelines.demo

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
