# The two commands of the README: `make run` and `make test`.  Everything else is a convenience.
BUILD      ?= build
BUILD_TEST ?= build-test
DATA       ?= ./jvdb-data
LISTEN     ?= 127.0.0.1:8080
JOBS       ?= $(shell nproc)

.PHONY: all deps build run test bench fuzz install clean

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/jvdb --data $(DATA) serve --listen $(LISTEN)

# The optimised build (what `make run` uses, so -O3-only warnings fail here too), then the sanitized
# build (ASan + UBSan) and the whole CTest suite.
test: build
	@cmake -S . -B $(BUILD_TEST) -DCMAKE_BUILD_TYPE=Debug -DJVDB_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD_TEST) -j $(JOBS)
	cd $(BUILD_TEST) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 600

# The peers' packages first: the configure step must see SQLite to build the bench programs.
bench:
	@scripts/install-deps --bench
	@$(MAKE) --no-print-directory build
	bench/run-all $(BUILD)

fuzz: deps
	@scripts/fuzz

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD_TEST) build-fuzz
