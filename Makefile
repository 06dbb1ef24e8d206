# Celer: the targets of the contract. Everything below works on a fresh
# Debian 12 machine: `make deps` installs what is missing.
PREFIX ?= /usr/local
DESTDIR ?=
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# CI builds treat warnings as errors.
WERROR := $(if $(CI),ON,OFF)
CMAKE_FLAGS := -DCELER_WERROR=$(WERROR)

.PHONY: all deps build build-asan test test-normal test-asan demo install clean

all: build

deps:
	@sh scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DCELER_SANITIZE=ON \
	  $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_DIR) -j $(JOBS)

test-normal: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer;
# any report fails the run. Reports exit with a code no program of ours
# uses (86), so a test expecting exit 1 or 2 cannot mistake one for a pass.
# handle_segv=0 lets test.crash die by SIGSEGV as it does in production.
test-asan: build-asan
	@cd $(ASAN_DIR) && \
	  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:exitcode=86:handle_segv=0 \
	  LSAN_OPTIONS=exitcode=86 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=86 \
	  ctest --output-on-failure -j $(JOBS)

test: lint test-normal test-asan

# Static analysis of every file the build compiles (so CI runs it through
# `make test`): cppcheck's error, warning and performance checks, zero
# findings. The few false positives are listed with their reasons in
# scripts/cppcheck/suppressions.txt; jansson's macros are described in
# scripts/cppcheck/jansson.cfg.
.PHONY: lint
lint: build
	@cppcheck --project=$(BUILD_DIR)/compile_commands.json --enable=warning,performance \
	  --library=posix --library=scripts/cppcheck/jansson.cfg \
	  --suppressions-list=scripts/cppcheck/suppressions.txt --inline-suppr \
	  --error-exitcode=1 -q -j $(JOBS)
	@echo "lint: cppcheck found nothing"

demo: build
	@sh scripts/demo.sh $(BUILD_DIR)

# libFuzzer (clang) on the parsers that meet outside bytes (fuzz/README.md):
# each target runs FUZZ_SECONDS, one after another, growing its corpus in
# $(FUZZ_DIR)/corpus/<target> from the seeds in fuzz/corpus/<target>. A
# finding stops the run; the input is saved as $(FUZZ_DIR)/<target>-crash-*.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= envelope url config verify
FUZZ_ARGS ?=
.PHONY: fuzz
fuzz: deps
	@cmake -S . -B $(FUZZ_DIR) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
	  -DCELER_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t || exit 1; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_DIR)/bin/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_DIR)/$$t- $(FUZZ_ARGS) \
	    $(FUZZ_DIR)/corpus/$$t fuzz/corpus/$$t || exit 1; \
	done

install: build
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(FUZZ_DIR)

# Every benchmark workload with defaults that finish within a few minutes
# on 2 cores; the table goes to stdout, the report to bench-report.json.
.PHONY: bench
bench: build
	@$(BUILD_DIR)/bin/celer-bench all --json bench-report.json

# Celer and its peers side by side (issue 5): celer-bench all, then
# bench/peers/run.py, which installs Celery, RQ, Sidekiq (Debian) and BullMQ
# (npm), runs them on its own redis-server, and prints one table with Celer's
# ratio to the best peer. Reports: $(BUILD_DIR)/bench/celer.json and
# $(BUILD_DIR)/bench/peers.json. The peers still run when celer-bench fails;
# the target then fails at the end. Options: CELER_BENCH_ARGS, BENCH_PEERS_ARGS.
CELER_BENCH_ARGS ?=
BENCH_PEERS_ARGS ?=
.PHONY: bench-peers
bench-peers: build
	@mkdir -p $(BUILD_DIR)/bench
	@[ -x /usr/bin/python3 ] || { \
	  if [ "$$(id -u)" -eq 0 ]; then s=""; else s="sudo"; fi; \
	  $$s apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$s apt-get install -y -qq python3; }
	@rm -f $(BUILD_DIR)/bench/celer.json
	@st=0; \
	$(BUILD_DIR)/bin/celer-bench all $(CELER_BENCH_ARGS) --json $(BUILD_DIR)/bench/celer.json || st=$$?; \
	/usr/bin/python3 bench/peers/run.py --out $(BUILD_DIR)/bench/peers.json \
	  --celer $(BUILD_DIR)/bench/celer.json $(BENCH_PEERS_ARGS) || st=$$?; \
	exit $$st
