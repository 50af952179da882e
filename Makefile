# The two commands of the README:
#   make demo   sets up .venv from nothing and runs `edge-ladder demo --out demo_out` (CPU)
#   make test   sets up .venv from nothing, builds kernels/, runs the tests (and the benchmark suite once, untimed)
# and for the robot:
#   make wheel  builds dist/edge_ladder-VERSION-py3-none-any.whl (pure Python: runtime, export, kernels binding)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= demo_out
DIST   ?= dist
# torch is pinned: this machine has the 2.13.0 CPU build on disk; an unpinned torch pulls CUDA (GBs).
TORCH  ?= torch==2.13.0

.PHONY: setup demo test kernels bench bench-stream wheel clean corpus-accuracy

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $@

kernels: setup
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
	cmake --build build --parallel 2

demo: setup kernels
	$(BIN)/edge-ladder demo --out $(OUT)

test: setup kernels
	$(BIN)/python -m pytest tests
	# the benchmark suite once, untimed, so it cannot rot (timed: make bench)
	$(BIN)/python -m pytest benchmarks --benchmark-disable -q

bench: setup kernels
	$(BIN)/python -m pytest benchmarks --benchmark-only

# the live Stream's CPU on a synthetic 720p@30 camera + 16 kHz microphone (README: Streaming on a
# robot's CPU); run it on an idle machine. Uses (and if needed makes) the demo's model.
bench-stream: demo
	$(BIN)/edge-ladder bench $(OUT)/export/model.onnx --stream --camera 1280x720@30 --duration 60 --threads 1 \
	    --json $(OUT)/bench/stream.json --md $(OUT)/bench/stream.md

# Built from a fresh copy of the sources, so no stale module in setuptools' build/lib can slip in.
# Needs only the system Python and pip (pip fetches setuptools for the build).
wheel:
	rm -rf build/wheel-src && mkdir -p build/wheel-src $(DIST)
	cp -r pyproject.toml README.md edge_ladder export kernels build/wheel-src/
	$(PYTHON) -m pip wheel --quiet --no-deps --wheel-dir $(DIST) build/wheel-src
	@ls -l $(DIST)/edge_ladder-*.whl

clean:
	rm -rf build $(OUT) $(DIST) .pytest_cache

# how hard the crema corpus is: the default model per modality on actor folds (README: The hard corpus).
# CPU-heavy: FOLDS=5 trains 15 models; set CORPUS_ACCURACY_ARGS="--features DIR" to re-use prepared features.
FOLDS ?= 5
corpus-accuracy: setup
	$(BIN)/python benchmarks/corpus_accuracy.py --out corpus_accuracy_out --folds $(FOLDS) $(CORPUS_ACCURACY_ARGS)
