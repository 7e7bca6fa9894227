# Two commands for a fresh machine: `make demo` and `make test` (both set everything up first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast schemas example-data docker-image bench-synth clean viewer skill-bundle

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# constraints pin the local CPU build of torch; without them pip swaps in a multi-GB CUDA build
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	# the main job the way an agent runs it: the runner, the example data, the local backend, shipped weights
	$(BIN)/python runners/tao_run_action.py --skill skills/tao-train-nvpanoptix3d --action inference \
		--inference-dataset examples/front3d_tiny --backend local --jobs-dir jobs
	@echo "outputs: jobs/<job id>/results/predictions/ (volume .npz, meshes .ply, objects JSON, previews)"
	@job=$$(ls -td jobs/*/ | head -1); \
		echo "scene page: $$(ls $${job}results/predictions/*_scene.html | head -1)"; \
		echo "report: $${job}results/report.html"

# our skill in the public TAO skill bank's folder layout (schemas, references, evals inside), under dist/skills/
skill-bundle: setup
	rm -rf dist/skills/tao-train-nvpanoptix3d
	$(BIN)/python -m tao_skill_bank.tao_layout skills/tao-train-nvpanoptix3d dist/skills

# the scene page's script: three.js (pinned in package-lock.json) and scene.js bundled into one file we ship
viewer:
	cd nvpanoptix3d/viewer/web && npm ci --no-audit --no-fund && npm run build

test: setup
	$(BIN)/python -m pytest -q

# the quick checks only (no subprocess, training or service tests): seconds to a few minutes
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

schemas: setup
	$(BIN)/python -m tao_skill_bank.schema_gen

example-data: setup
	rm -rf examples/front3d_tiny
	$(BIN)/nvpanoptix3d synth examples/front3d_tiny --scenes 4 --frames 1 --seed 2029 --val-scenes 1 --test-scenes 1

docker-image: setup
	bash docker/build_host_image.sh

bench-synth: setup
	$(BIN)/python bench/synth.py

clean:
	rm -rf $(VENV) jobs
