# The two commands of the README: `make run` and `make test`.  Everything else is a convenience.
BUILD      ?= build
BUILD_TEST ?= build-test
BUILD_TSAN ?= build-tsan
DATA       ?= ./jvdb-data
LISTEN     ?= 127.0.0.1:8080
JOBS       ?= $(shell nproc)
# Warnings are errors in the test and CI builds (`make test`, `make tsan`), not in a user's build:
# a newer compiler's new warning must not stop someone from building a release.
WERROR     ?= OFF

.PHONY: all deps test-deps build run test tsan bench fuzz install deb format clean

all: build

# Build packages only: `make build` / `make run` never install test tooling (node, npm, s3rver).
deps:
	@scripts/install-deps

test-deps:
	@scripts/install-deps --test

# Release: no test hooks (JVDB_FAULT / JVDB_CRASH_AT are not even read) and no tests.
build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DJVDB_WERROR=$(WERROR) -DJVDB_TESTS=OFF -DJVDB_TEST_HOOKS=OFF >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/jvdb --data $(DATA) serve --listen $(LISTEN)

# ThreadSanitizer: stop at the first race (exit 66, the report in the test's output or the server's
# log); tests/tsan.supp holds only third-party false positives, each with its reason.
TSAN_ENV = TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp"
# gcc 12's TSan runtime dies with "unexpected memory mapping" on kernels that randomise mmap with
# 32 bits (vm.mmap_rnd_bits, newer distributions' default): run the tests without ASLR where the
# kernel lets us (a container may not), which is harmless for them.
TSAN_ENV += $(shell setarch $$(uname -m) -R true >/dev/null 2>&1 && echo setarch $$(uname -m) -R)
# What the tsan-smoke tests run (CTest label tsan-smoke): only these are built with TSan in `make test`.
TSAN_SMOKE_TARGETS = jvdb test_store test_compact test_manifest test_backup test_search_flat test_search_hnsw

# The optimised build (what `make run` uses, so -O3-only warnings fail here too), then the sanitized
# build (ASan + UBSan) and the whole CTest suite, then a bounded ThreadSanitizer smoke set (label
# tsan-smoke: writers + readers + compaction, concurrent searches, backups under load, the server
# under concurrent clients); `make tsan` runs the whole TSan set.
# The test builds have the test hooks; crash.release_ignores_hooks checks the Release build in $(BUILD).
test: test-deps
	@$(MAKE) --no-print-directory build WERROR=ON
	@cmake -S . -B $(BUILD_TEST) -DCMAKE_BUILD_TYPE=Debug -DJVDB_SANITIZE=ON -DJVDB_WERROR=ON -DJVDB_TEST_HOOKS=ON \
	  -DJVDB_RELEASE_DIR=$(abspath $(BUILD)) >/dev/null
	@cmake --build $(BUILD_TEST) -j $(JOBS)
	cd $(BUILD_TEST) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 600
	@cmake -S . -B $(BUILD_TSAN) -DCMAKE_BUILD_TYPE=Debug -DJVDB_TSAN=ON -DJVDB_WERROR=ON -DJVDB_TEST_HOOKS=ON >/dev/null
	@cmake --build $(BUILD_TSAN) -j $(JOBS) --target $(TSAN_SMOKE_TARGETS)
	cd $(BUILD_TSAN) && $(TSAN_ENV) ctest -L tsan-smoke --output-on-failure -j $(JOBS) --timeout 300

# The ThreadSanitizer build of the unit, concurrency and e2e tests (CTest label tsan).
tsan: test-deps
	@cmake -S . -B $(BUILD_TSAN) -DCMAKE_BUILD_TYPE=Debug -DJVDB_TSAN=ON -DJVDB_WERROR=ON -DJVDB_TEST_HOOKS=ON >/dev/null
	@cmake --build $(BUILD_TSAN) -j $(JOBS)
	cd $(BUILD_TSAN) && $(TSAN_ENV) ctest -L '^tsan$$' --output-on-failure -j $(JOBS) --timeout 900

# The peers' packages first: the configure step must see SQLite to build the bench programs.
bench:
	@scripts/install-deps --bench
	@$(MAKE) --no-print-directory build
	bench/run-all $(BUILD)

fuzz: test-deps
	@scripts/fuzz

# The program, libjvdb, its header and jvdb.pc, the systemd unit (jvdb.service, user jvdb, data in
# /var/lib/jvdb), a sample /etc/jvdb/jvdb.json (never overwritten) and the docs: see docs/DEPLOY.md.
install: build
	cmake --install $(BUILD)

# A Debian package of the Release build, in $(BUILD)/deb (packaging/build-deb; tested by
# tests/packaging).
deb: build
	packaging/build-deb $(BUILD) $(BUILD)/deb

# The house style (.clang-format) applied to every C file; `make test` checks it (test "style").
format:
	git ls-files 'src/*.[ch]' 'include/*.h' 'tests/*.[ch]' 'bench/*.[ch]' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(BUILD_TEST) $(BUILD_TSAN) build-fuzz
