# gpupool - a thin wrapper over CMake. The README's two commands:
#   make run    build, start `gpupool up` on this host's GPUs (simulated when there are none), run two workloads
#   make test   install what is missing, build with gcc and with clang+ASan+UBSan, run every test in both
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CTEST_JOBS ?= $(JOBS)
MAKEFLAGS  += --no-print-directory

.PHONY: all deps build build-asan test test-release test-asan run bench format clean

all: build

deps:
	@scripts/install-deps.sh --check >/dev/null 2>&1 || scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc
	cmake --build $(BUILD) -j$(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DGP_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)

test-release: build
	cd $(BUILD) && ctest -j$(CTEST_JOBS) --output-on-failure

test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest -j$(CTEST_JOBS) --output-on-failure

test: test-release test-asan

run: build
	BUILD=$(BUILD) scripts/run.sh

bench: build
	BUILD=$(BUILD) scripts/bench.sh

format:
	clang-format -i $$(git ls-files --cached --others --exclude-standard '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
