# Developer entry points. A fresh machine starts with scripts/run.sh or scripts/test.sh (README),
# which install the dependencies first and then call these targets.
BUILD ?= build
JOBS ?= 2
CONFIG ?= configs/default.yaml

.PHONY: all deps configure build run test bench clean

all: build

deps:
	bash scripts/install-deps.sh

configure:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: configure
	cmake --build $(BUILD) -j$(JOBS)

# The main job: the default experiment end to end (train, compress, simulate, faults, estimate,
# report) on Fashion-MNIST; a five-line summary and the path of report.html at the end.
run: build
	$(BUILD)/xbar run -c $(CONFIG)

test: build
	cd $(BUILD) && ctest -j$(JOBS) --output-on-failure

bench: build
	$(BUILD)/bench/train_bench --benchmark_counters_tabular=true

clean:
	rm -rf $(BUILD)
