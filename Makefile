# Ferry — `make demo` and `make test` work on a fresh machine (they install what is missing).
SHELL := /bin/bash
PYTHON ?= python3
SWIFT ?= swift
BUILD := .build/release
BIN := bin/ferry
PYTEST_ARGS ?=

BENCH_ARGS ?=
PREFIX ?= /usr/local
FUZZ_SECONDS ?= 60
VERSION := 0.1.0
MAJOR := 0
LIBDIR := $(PREFIX)/lib
PYDEST := $(PREFIX)/share/ferry/python
EXAMPLES := example-digits example-frames example-table example-stream
CC ?= cc

.PHONY: all check-tables setup build python-ext build-examples demo demo-redis test test-swift test-python fuzz fuzz-short sanitize soak bench bench-tcp bench-redis bench-streams bench-tables bench-setup install uninstall clean help

all: build

help:
	@echo "make demo   – set up, build, run the nine-digit demo over shared memory"
	@echo "make test   – set up, build, run the Swift and Python test suites"
	@echo "make build  – release build of libferry.so and the ferry command (bin/ferry)"
	@echo "make bench  – Ferry against Pipe, shared_memory, pyzmq, Redis, iceoryx2 (docs/benchmarks.md)"

setup:
	@scripts/setup.sh

build: setup
	@$(SWIFT) build -c release --product ferry 2>&1 | grep -vE '^(Building|Build of product|\[[0-9]+/[0-9]+\])|prohibited flag' || true
	@# The command links its Swift runtime (Foundation included) statically, like libferry.so:
	@# the installed `ferry` runs where no Swift toolchain is.
	@$(SWIFT) build -c release --product ferry-cli --static-swift-stdlib 2>&1 | grep -vE '^(Building|Build of product|\[[0-9]+/[0-9]+\])|mktemp|prohibited flag' || true
	@test -x $(BUILD)/ferry-cli && test -f $(BUILD)/libferry.so || { echo "build failed" >&2; exit 1; }
	@ln -sf libferry.so $(BUILD)/libferry.so.0
	@mkdir -p bin && ln -sf ../$(BUILD)/ferry-cli $(BIN)
	@$(MAKE) -s python-ext

# The Python client's one-array call in C (python/ferry/_fastcall.c): no libferry link, it
# gets the function addresses from the ctypes loader. Rebuilt when its source or ferry.h changes.
python-ext:
	@ext=python/ferry/_fastcall$$($(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"); \
	inc=$$($(PYTHON) -c "import sysconfig; print(sysconfig.get_paths()['include'])"); \
	if [ ! -f $$inc/Python.h ]; then echo "note: no Python.h for $(PYTHON): the Python client uses its ctypes path" >&2; exit 0; fi; \
	if [ ! -f $$ext ] || [ python/ferry/_fastcall.c -nt $$ext ] || [ include/ferry.h -nt $$ext ]; then \
	  $(CC) -O2 -shared -fPIC -Wall -Wextra -Werror -Iinclude $$($(PYTHON) -c "import sysconfig; print('-I' + sysconfig.get_paths()['include'])") \
	    -I$$($(PYTHON) -c "import numpy; print(numpy.get_include())") -o $$ext python/ferry/_fastcall.c || exit 1; \
	fi

demo: build
	@$(BIN) demo

# The same digits demo distributed: a local redis-server, two `ferry serve --redis` nodes,
# the client on redis://.
demo-redis: build
	@$(BIN) demo --distributed --nodes 2

build-examples: build
	@for p in $(EXAMPLES); do $(SWIFT) build -c release --product $$p 2>&1 | grep -vE '^(Building|Build of product|\[[0-9]+/[0-9]+\])|prohibited flag' || true; done

test: check-tables build build-examples test-swift test-python fuzz-short

# Status codes and dtypes come from one table (scripts/gen_tables.py) in every language.
check-tables:
	@$(PYTHON) scripts/gen_tables.py --check

# libFuzzer on the message decoder (also while a peer thread rewrites the message) and the
# segment-header check (fuzz/); crashes land in fuzz/.build/.
fuzz:
	@cd fuzz && $(SWIFT) build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library 2>&1 | grep -vE '^(Building|Build complete|\[[0-9]+/[0-9]+\])|ld.gold: warning|mktemp|prohibited flag'; test $${PIPESTATUS[0]} -eq 0 || { echo "fuzz targets failed to build" >&2; exit 1; }
	@for t in message segment racing arguments frames; do \
	  bin=fuzz/.build/release/Fuzz$$(echo $$t | sed 's/./\U&/'); mkdir -p fuzz/.build/work-$$t; rm -f fuzz/.build/crash-$$t-*; \
	  SWIFT_BACKTRACE=enable=no $$bin -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=fuzz/.build/crash-$$t- \
	    fuzz/.build/work-$$t fuzz/corpus/$$t 2>&1 | grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY)' ; \
	  test $${PIPESTATUS[0]} -eq 0 || { echo "fuzz $$t: crash, see fuzz/.build/crash-$$t-*"; exit 1; }; \
	  echo "fuzz $$t: no crash in $(FUZZ_SECONDS) s"; \
	done

fuzz-short:
	@$(MAKE) -s fuzz FUZZ_SECONDS=15

# The Swift tests under ThreadSanitizer and AddressSanitizer (separate build folders).
sanitize: build
	$(SWIFT) test --sanitize=thread --scratch-path .build-tsan 2>&1 | grep -E 'Executed|error|WARNING|SUMMARY' ; exit $${PIPESTATUS[0]}
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/lsan.supp $(SWIFT) test --sanitize=address --scratch-path .build-asan 2>&1 | grep -E 'Executed|error|ERROR|SUMMARY' ; exit $${PIPESTATUS[0]}

test-swift:
	$(SWIFT) test 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]'; exit $${PIPESTATUS[0]}

test-python:
	cd tests && PYTHONPATH=$(CURDIR)/python $(PYTHON) -m pytest -q $(PYTEST_ARGS)

bench-setup: setup
	@scripts/setup.sh --bench

bench: build bench-setup
	$(PYTHON) bench/run.py $(BENCH_ARGS)
	$(PYTHON) bench/tcp.py $(BENCH_ARGS) > /dev/null
	$(PYTHON) bench/redis_bench.py $(BENCH_ARGS) > /dev/null
	$(PYTHON) bench/streams.py $(BENCH_ARGS) > /dev/null
	$(PYTHON) bench/tables.py $(BENCH_ARGS) > /dev/null
	$(PYTHON) bench/batching.py $(BENCH_ARGS) > /dev/null
	$(PYTHON) bench/render.py

# Only the table rows (bench/tables.py), then the page again.
bench-tables: build bench-setup
	$(PYTHON) bench/tables.py $(BENCH_ARGS) > /dev/null
	$(PYTHON) bench/render.py

# Only the stream rows (bench/streams.py), then the page again.
bench-streams: build bench-setup
	$(PYTHON) bench/streams.py $(BENCH_ARGS) > /dev/null
	$(PYTHON) bench/render.py

# Only the redis:// rows (bench/redis_bench.py), then the page again.
bench-redis: build bench-setup
	$(PYTHON) bench/redis_bench.py $(BENCH_ARGS) > /dev/null
	$(PYTHON) bench/render.py

# Only the tcp:// rows (bench/tcp.py), then the page again.
bench-tcp: build bench-setup
	$(PYTHON) bench/tcp.py $(BENCH_ARGS) > /dev/null
	$(PYTHON) bench/render.py

install: build
	install -d $(LIBDIR)/pkgconfig $(LIBDIR)/cmake/Ferry $(PREFIX)/include $(PREFIX)/bin $(PYDEST)
	install -m 0755 $(BUILD)/libferry.so $(LIBDIR)/libferry.so.$(VERSION)
	ln -sf libferry.so.$(VERSION) $(LIBDIR)/libferry.so.$(MAJOR)
	ln -sf libferry.so.$(MAJOR) $(LIBDIR)/libferry.so
	install -m 0644 include/ferry.h include/ferry.hpp $(PREFIX)/include/
	install -m 0755 $(BUILD)/ferry-cli $(PREFIX)/bin/ferry
	sed -e 's|@PREFIX@|$(PREFIX)|g; s|@VERSION@|$(VERSION)|g' packaging/ferry.pc.in > $(LIBDIR)/pkgconfig/ferry.pc
	sed -e 's|@VERSION@|$(VERSION)|g; s|@MAJOR@|$(MAJOR)|g' packaging/FerryConfig.cmake.in > $(LIBDIR)/cmake/Ferry/FerryConfig.cmake
	sed -e 's|@VERSION@|$(VERSION)|g; s|@MAJOR@|$(MAJOR)|g' packaging/FerryConfigVersion.cmake.in > $(LIBDIR)/cmake/Ferry/FerryConfigVersion.cmake
	rm -rf $(PYDEST)/ferry && cp -r python/ferry $(PYDEST)/ferry && find $(PYDEST)/ferry -name __pycache__ -prune -exec rm -rf {} +
	ln -sf ../../../../lib/libferry.so.$(MAJOR) $(PYDEST)/ferry/libferry.so
	@echo "installed Ferry $(VERSION) in $(PREFIX) (Python package: $(PYDEST), add it to PYTHONPATH)"

uninstall:
	rm -f $(LIBDIR)/libferry.so.$(VERSION) $(LIBDIR)/libferry.so.$(MAJOR) $(LIBDIR)/libferry.so
	rm -f $(PREFIX)/include/ferry.h $(PREFIX)/include/ferry.hpp $(PREFIX)/bin/ferry $(LIBDIR)/pkgconfig/ferry.pc
	rm -rf $(LIBDIR)/cmake/Ferry $(PREFIX)/share/ferry

SOAK_SECONDS ?= 180
soak: build
	$(PYTHON) tests/soak.py --seconds $(SOAK_SECONDS)
	$(PYTHON) tests/stress.py --seconds $(SOAK_SECONDS)
	FERRY_EXPLORER_CALLS=2 $(SWIFT) test --filter SlotMachineExplorerTests.testEveryInterleavingOfTwoClientsTwoWorkersTwoSlots 2>&1 | grep -E 'explorer:|error|Executed'; exit $${PIPESTATUS[0]}

clean:
	rm -rf .build bin python/ferry/_fastcall*.so
