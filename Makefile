# The two commands of the README:
#   make demo   sets up .venv from nothing and runs `edge-ladder demo --out demo_out` (CPU)
#   make test   sets up .venv from nothing, builds kernels/, runs the tests (and the benchmark suite once, untimed)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= demo_out
# torch is pinned: this machine has the 2.13.0 CPU build on disk; an unpinned torch pulls CUDA (GBs).
TORCH  ?= torch==2.13.0

.PHONY: setup demo test kernels bench clean

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

clean:
	rm -rf build $(OUT) .pytest_cache
