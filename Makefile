# berth's build and checks. Use ./dev.sh TARGET on a fresh machine: it installs what is
# missing, then calls make.
#
# Two stacks, each in its own venv:
#  - the primary one, what a user who types `pip install` gets: torch from PyPI
#    (requirements/pypi-stack.txt) in .venv, berth built in place against that torch's
#    libtorch (editable install);
#  - Debian's: /usr/bin/python3 with python3-torch and libtorch-dev 1.13 in .venv-debian
#    (--system-site-packages), berth built from a copy of the tree into that venv, since
#    both stacks' extensions would have the same file name in python/berth/.
PYTHON_PYPI ?= $(shell command -v python3.11 || command -v python3)
PYTHON_SYS := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
DEB_VENV := .venv-debian
DEB_PY := $(DEB_VENV)/bin/python
DEB_SRC := build/debian-src
ASAN_DIR := build/asan
SOURCES := $(wildcard csrc/*/*.c csrc/*/*.h csrc/include/berth/*.h csrc/shim/*.cpp csrc/shim/CMakeLists.txt) CMakeLists.txt pyproject.toml
STAMP := $(VENV)/.berth-built
DEB_STAMP := $(DEB_VENV)/.berth-built

.PHONY: all build build-debian demo demo-debian format lint test test-c test-pypi test-debian test-core test-serving sanitize test-cuda fuzz bench bench-server bench-peers perf-analyzer clean validate-tools deploy-reference image-test

all: build

# pip is told the exact torch: a range would let it fetch a CUDA build of several GB.
# requirements/build.txt: the build backend (scikit-build-core), since berth is built
# without build isolation.
$(VENV)/.requirements: requirements/pypi-stack.txt requirements/build.txt
	test -x $(PY) || $(PYTHON_PYPI) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/pypi-stack.txt -r requirements/build.txt
	cat requirements/pypi-stack.txt requirements/build.txt > $@

# Editable install: the native parts are built in place under python/berth/.
$(STAMP): $(VENV)/.requirements $(SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps --no-index -e .
	touch $@

build: $(STAMP)

$(DEB_PY):
	$(PYTHON_SYS) -m venv --system-site-packages $(DEB_VENV)

# Debian's stack is Debian's packages, but for the build backend, which bookworm lacks.
$(DEB_VENV)/.requirements: $(DEB_PY) requirements/build.txt
	$(DEB_PY) -m pip install -q -r requirements/build.txt
	cp requirements/build.txt $@

# The Debian leg installs berth (not editable) from a copy of the tracked tree.
$(DEB_STAMP): $(DEB_VENV)/.requirements $(SOURCES) $(shell git ls-files python)
	rm -rf $(DEB_SRC) && mkdir -p $(DEB_SRC)
	git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C $(DEB_SRC)
	$(DEB_PY) -m pip install -q --no-build-isolation --no-deps --no-index $(DEB_SRC)
	touch $@

build-debian: $(DEB_STAMP)

demo: build
	$(PY) -m berth demo

demo-debian: build-debian
	cd build && ../$(DEB_PY) -m berth demo --out ../berth-demo-debian

# The linters, the C unit tests, then both stacks: the PyPI one with the docstring
# examples, then Debian's.
test: lint test-c test-pypi test-debian

# The C unit tests of csrc/tests (pieces without a Python face), warnings as errors.
test-c:
	cmake -S . -B build/ctest -DBERTH_EXTENSION=OFF -DBERTH_SHIM=OFF -DBERTH_TESTS=ON \
	    -DBERTH_WERROR=ON >/dev/null
	cmake --build build/ctest -j2
	cd build/ctest && ctest --output-on-failure

# ruff (rules in pyproject.toml, pinned in requirements/pypi-stack.txt) on the Python;
# clang-format (.clang-format; Debian's clang-format 14) on the C and C++.
C_FILES = $(wildcard csrc/*/*.c csrc/*/*.h csrc/include/berth/*.h csrc/shim/*.cpp)
lint: $(VENV)/.requirements
	$(PY) -m ruff check --no-cache python tests benchmarks
	@echo "clang-format --dry-run --Werror: $(words $(C_FILES)) C and C++ files"
	@clang-format --dry-run --Werror $(C_FILES)

# Rewrites the C and C++ in berth's style.
format:
	clang-format -i $(C_FILES)

test-pypi: build perf-analyzer
	$(PY) -m pytest -q --doctest-modules tests python/berth

# Run from build/ so that `import berth` finds the installed copy, not python/berth.
test-debian: build-debian perf-analyzer
	cd build && ../$(DEB_PY) -m pytest -q -p no:cacheprovider --rootdir=.. -c ../pyproject.toml ../tests

test-core: build
	$(PY) -m pytest -q tests/core

SERVING_TESTS := tests/serving
test-serving: build perf-analyzer
	$(PY) -m pytest -q $(SERVING_TESTS) --doctest-modules python/berth/serving

# The C core and the shim built with AddressSanitizer + UBSan (and -Werror) by the root CMake
# project into a copy of the package, running the core and serving tests (the servers they
# start inherit the instrumented build).
# Python itself is not instrumented, so the runtime is preloaded and leak checking is off
# (CPython keeps its interned objects until exit).
sanitize: $(VENV)/.requirements perf-analyzer
	rm -rf $(ASAN_DIR)/berth && mkdir -p $(ASAN_DIR) && cp -r python/berth $(ASAN_DIR)/berth
	find $(ASAN_DIR)/berth -name '*.so' -delete
	find build/asan-obj -name '*.so' -delete 2>/dev/null || true  # relinked, so copied again
	cmake -S . -B build/asan-obj -DPython_EXECUTABLE=$(abspath $(PY)) -DCMAKE_BUILD_TYPE=Release \
	    -DBERTH_SANITIZE=ON -DBERTH_WERROR=ON -DBERTH_TESTS=ON \
	    -DBERTH_INPLACE_DIR=$(abspath $(ASAN_DIR))/berth >/dev/null
	cmake --build build/asan-obj -j2
	cd build/asan-obj && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_odr_violation=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 BERTH_SANITIZED=1 \
	PYTHONPATH=$(ASAN_DIR) $(PY) -m pytest -q -p no:cacheprovider $(SANITIZE_TESTS)

SANITIZE_TESTS ?= tests/core $(SERVING_TESTS)

# The core and .pt2 tests on a GPU machine, against the CUDA torch that $(CUDA_PY) imports
# (tests/core/test_cuda.py runs only where torch sees a GPU). The package is built in place
# by the root CMake project into a copy, as for sanitize, so no venv is made or changed.
CUDA_PY ?= python3
CUDA_DIR := build/cuda
test-cuda:
	rm -rf $(CUDA_DIR)/berth && mkdir -p $(CUDA_DIR) && cp -r python/berth $(CUDA_DIR)/berth
	find $(CUDA_DIR)/berth -name '*.so' -delete
	find build/cuda-obj -name '*.so' -delete 2>/dev/null || true  # relinked, so copied again
	cmake -S . -B build/cuda-obj -DPython_EXECUTABLE="$$(command -v $(CUDA_PY))" \
	    -DCMAKE_BUILD_TYPE=Release -DBERTH_INPLACE_DIR=$(abspath $(CUDA_DIR))/berth >/dev/null
	cmake --build build/cuda-obj -j$$(nproc)
	PYTHONPATH=$(abspath $(CUDA_DIR)) $(CUDA_PY) -m pytest -q -p no:cacheprovider -rs tests/core

# libFuzzer (clang, ASan/UBSan) on the protocol codec for FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
fuzz:
	csrc/fuzz/build.sh $(FUZZ_SECONDS)

bench: build
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_pt2.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_server.py

bench-server: build
	$(PY) benchmarks/bench_server.py

# berth serve against TorchServe, BentoML, LitServe, Ray Serve, MLServer, KServe and the
# HTTP floor (benchmarks/peers/): each peer in its own venv under build/peers/, made on
# demand, never a berth dependency; not part of CI. ./dev.sh bench-peers PEERS_ARGS=--quick
PEERS_ARGS ?=
bench-peers: build perf-analyzer
	$(PY) benchmarks/peers/run.py $(PEERS_ARGS)

# Triton's perf_analyzer in its own venv (requirements/perf-analyzer.txt says why this
# way), run through build/perf-analyzer/perf_analyzer, which puts the CUDA runtime it links
# on the library path.
PA_VENV := build/perf-analyzer
perf-analyzer: $(PA_VENV)/.requirements
$(PA_VENV)/.requirements: requirements/perf-analyzer.txt
	test -x $(PA_VENV)/bin/python || $(PYTHON_PYPI) -m venv $(PA_VENV)
	$(PA_VENV)/bin/python -m pip install -q --no-deps -r requirements/perf-analyzer.txt
	cd $(PA_VENV) && ln -sfn $$(echo lib/python3*/site-packages/nvidia/cuda_runtime/lib) cudart
	printf '%s\n' '#!/bin/sh' 'here=$$(dirname "$$(readlink -f "$$0")")' \
	  'LD_LIBRARY_PATH="$$here/cudart$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" exec "$$here/bin/perf_analyzer" "$$@"' \
	  > $(PA_VENV)/perf_analyzer
	chmod +x $(PA_VENV)/perf_analyzer
	$(PA_VENV)/perf_analyzer --version
	cp requirements/perf-analyzer.txt $@

# Node tools that validate emitted manifests and Dockerfiles (npm ci, once).
validate-tools:
	sh tests/validate/install.sh

# Regenerates deploy/, the reference output of `berth deploy` for the seed model.
deploy-reference: build
	$(PY) tests/validate/reference.py write deploy

# Builds the image from an emitted context with podman, serves from it, checks answers.
image-test: build
	PYTHON=$(PY) sh tests/image/run.sh

clean:
	rm -rf build python/berth/*.so
