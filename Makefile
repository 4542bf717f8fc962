# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates the virtualenv in .venv and installs the package on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test lint faults bench dev clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[postgres,mysql,dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/erzy-pipelines demo

test: $(VENV)/.installed
	$(BIN)/ruff check erzy_pipelines erzy_pipelines_tests benchmarks
	$(BIN)/python -m pytest -q

faults: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m faults -s

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/seed_benchmark.py
	$(BIN)/python benchmarks/pipeline_benchmark.py

dev: $(VENV)/.installed
	$(BIN)/erzy-pipelines dev

clean:
	rm -rf $(VENV) data .pytest_cache
