PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean

# Re-install only when the package metadata or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,bench]'
	$(BIN)/python -m pip install -q --no-deps 'tinysoundfont>=0.3'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/mtldm generate --model demo --out out --seed 0 --force

# Lint, types and the layer contracts (pyproject.toml, .importlinter) before any test.
lint: install
	$(BIN)/ruff check mtldm_cli tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# Every test, slow ones included. pytest exits 5 when it collected no test: that must fail, not pass.
test: lint
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest ran no tests" >&2; exit 1; fi; exit $$rc

# The inner loop: no subprocess, accelerate or all-commands tests, no lint.
test-fast: install
	@$(BIN)/python -m pytest -q -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest ran no tests" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) out .pytest_cache
