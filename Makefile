# NegGuide developer commands. `make demo` and `make test` each do all setup themselves.
PYTHON := .venv/bin/python

.PHONY: setup test test-unit test-library test-server bench demo

setup:
	@scripts/setup_host.sh

test: setup
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

test-library: setup
	$(PYTHON) -m pytest tests/library $(PYTEST_ARGS)

test-server: setup
	$(PYTHON) -m pytest tests/server $(PYTEST_ARGS)

demo: setup
	$(PYTHON) scripts/demo.py

bench: setup
	$(PYTHON) bench/run.py $(BENCH_ARGS)
