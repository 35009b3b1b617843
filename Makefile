# The README's two commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench pretrained clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev,eval,serve,hub]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/difflm demo --out runs/demo

test: lint
	$(PY) -m pytest

# ruff (format and check) and mypy, at the versions pinned in constraints.txt.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/core.py

# Rebuild the models shipped in the package (seeded): the grammar model; the E2E model too when
# its training file is there (E2E=PATH, default ../shared/data/e2e/src1_valid.txt).
E2E ?= ../shared/data/e2e/src1_valid.txt
pretrained: $(VENV)/.installed
	$(PY) scripts/pretrained.py grammar
	if [ -f "$(E2E)" ]; then $(PY) scripts/pretrained.py e2e --e2e "$(E2E)"; fi

clean:
	rm -rf $(VENV) runs
