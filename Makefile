# The commands of the README: `make run`, `make test` (everything) and `make unit` (in memory).
# PURE=1: run the sources of the hot modules, not their compiled build (FERRYMQ_PURE_PYTHON).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ifneq ($(filter-out 0,$(PURE)),)
export FERRYMQ_PURE_PYTHON := 1
endif

.PHONY: run test unit lint bench build clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77' 'mypy>=1.10'
	FERRYMQ_BUILD_PURE=1 $(PY) -m pip install -q -e '.[test]'
	touch $@

# The editable install above builds pure (FERRYMQ_BUILD_PURE): the one compile is this one.
# The compiled hot modules (setup.py, mypyc; pyproject's [build-system] is installed above),
# built again when a source they are built from changed. Without a C compiler: pure Python.
# And every module's bytecode, as an installed package has it: a start that compiles its
# sources (none cached, or PYTHONDONTWRITEBYTECODE) holds 0.3 MB more RSS for the compiler's
# leftovers. compileall skips what is up to date.
build: src/ferrymq/_compiled.json
	$(PY) -m compileall -q src/ferrymq

src/ferrymq/_compiled.json: $(VENV)/.installed setup.py src/ferrymq/native.py \
		$(wildcard src/ferrymq/mqtt/*.py src/ferrymq/core/*.py src/ferrymq/model/*.py \
		src/ferrymq/storage/*.py) src/ferrymq/cluster/codec.py src/ferrymq/cluster/outbox.py
	$(PY) setup.py -q build_ext --inplace

run: build
	$(VENV)/bin/ferrymq start $(ARGS)

# mypy checks src/ferrymq ([tool.mypy] in pyproject.toml), not the tests: they are not
# annotated throughout, and their same-named files in several folders need a package layout
# of their own first.
test: build
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

# tests/unit only: no broker process, no sockets, seconds.
unit: build
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# lint-imports: the import contracts of pyproject.toml ([tool.importlinter]); mypy: the types.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# ferrymq, Mosquitto and amqtt side by side (bench/README.md); QUICK=1: one round, SOAK=300: soak.
bench: build
	$(PY) bench/run.py $(if $(QUICK),--quick) $(if $(SOAK),--soak $(SOAK)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info src/ferrymq/_compiled.json
	find src -name '*.so' -delete
