# The commands of the README: `make run`, `make test` (everything) and `make unit` (in memory).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test unit lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/ferrymq start $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

# tests/unit only: no broker process, no sockets, seconds.
unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# lint-imports: the import contracts of pyproject.toml ([tool.importlinter]).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports

# ferrymq, Mosquitto and amqtt side by side (bench/README.md); QUICK=1: one round, SOAK=300: soak.
bench: $(VENV)/.installed
	$(PY) bench/run.py $(if $(QUICK),--quick) $(if $(SOAK),--soak $(SOAK)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
