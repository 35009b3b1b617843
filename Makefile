# The README's two commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev,eval]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/difflm demo --out runs/demo

test: lint
	$(PY) -m pytest

# ruff (format and check) and mypy, at the versions pinned in constraints.txt.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/core.py

clean:
	rm -rf $(VENV) runs
