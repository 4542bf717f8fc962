# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates the virtualenv in .venv and installs the package on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test chromium contract lint faults soak bench dev clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[postgres,mysql,dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/erzy-pipelines demo

# The UI tests drive Debian's Chromium; install it when missing and we may (root, apt-get).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "note: no chromium; the UI tests will skip (apt-get install chromium)"

test: $(VENV)/.installed chromium
	$(BIN)/ruff check erzy_pipelines erzy_pipelines_tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadscope

# The API contract against the real ErzyCall (ERZYCALL_CONTRACT_API_KEY=ek_test_...; optional
# ERZYCALL_CONTRACT_BASE_URL) and the sandbox; without a key the real half is skipped, saying why.
contract: $(VENV)/.installed
	$(BIN)/python -m pytest -v -rs -m contract erzy_pipelines_tests/contract

faults: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m faults -s

# The stateful model of the whole sync as a long soak: ERZY_MODEL_EXAMPLES deployments' lives of
# ERZY_MODEL_STEPS steps each, from ERZY_MODEL_SEED (a new seed explores new sequences).
soak: $(VENV)/.installed
	ERZY_MODEL_EXAMPLES=$${ERZY_MODEL_EXAMPLES:-200} ERZY_MODEL_STEPS=$${ERZY_MODEL_STEPS:-40} \
		ERZY_MODEL_SEED=$${ERZY_MODEL_SEED:-$$(date +%s)} \
		sh -c 'echo "soak: seed $$ERZY_MODEL_SEED"; exec $(BIN)/python -m pytest -q -s erzy_pipelines_tests/model --timeout 0'

# Times `erzy-pipelines sync` end to end at 100,000 and 1,000,000 rows (about 15 minutes);
# prints each figure beside its goal and ends with "bench: N/M goals met".
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/sync_benchmark.py

dev: $(VENV)/.installed
	$(BIN)/erzy-pipelines dev

clean:
	rm -rf $(VENV) data .pytest_cache
