# NegGuide developer commands. `make demo` and `make test` each do all setup themselves.
# COMFYUI_HOST selects the ComfyUI host: 0.33.0 (the primary, default) or 0.3.75 (the oldest
# supported); each has its own venv (.venv-<host>/) and tree (.host/<host>/). COMFYUI_PATH uses
# your own ComfyUI checkout instead of the tree.
COMFYUI_HOST ?= 0.33.0
export COMFYUI_HOST
PYTHON := .venv-$(COMFYUI_HOST)/bin/python

.PHONY: setup test test-unit test-library test-server test-workflows-heavy workflows bench demo negbench train-shapes-world

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

# The bundled workflows on SDXL / Flux / T5-XXL stand-ins: minutes each on a CPU (make test skips them).
test-workflows-heavy: setup
	NEGGUIDE_HEAVY_WORKFLOWS=1 $(PYTHON) -m pytest tests/server/test_workflows.py -m heavy $(PYTEST_ARGS)

# Rewrite workflows/*.json and their .jpg thumbnails from scripts/build_workflows.py.
workflows: setup
	$(PYTHON) scripts/build_workflows.py

demo: setup
	$(PYTHON) scripts/demo.py

bench: setup
	$(PYTHON) bench/run.py $(BENCH_ARGS)

negbench: setup
	$(PYTHON) scripts/negbench.py $(NEGBENCH_ARGS)

train-shapes-world: setup
	$(PYTHON) scripts/train_shapes_world.py $(TRAIN_ARGS)
