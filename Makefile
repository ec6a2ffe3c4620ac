# Ferry — `make demo` and `make test` work on a fresh machine (they install what is missing).
SHELL := /bin/bash
PYTHON ?= python3
SWIFT ?= swift
BUILD := .build/release
BIN := bin/ferry
PYTEST_ARGS ?=

BENCH_ARGS ?=

.PHONY: all setup build demo test test-swift test-python bench bench-setup clean help

all: build

help:
	@echo "make demo   – set up, build, run the nine-digit demo over shared memory"
	@echo "make test   – set up, build, run the Swift and Python test suites"
	@echo "make build  – release build of libferry.so and the ferry command (bin/ferry)"
	@echo "make bench  – Ferry against Pipe, shared_memory, pyzmq, Redis, iceoryx2 (docs/benchmarks.md)"

setup:
	@scripts/setup.sh

build: setup
	@$(SWIFT) build -c release --product ferry 2>&1 | grep -vE '^(Building|Build of product|\[[0-9]+/[0-9]+\])' || true
	@$(SWIFT) build -c release --product ferry-cli 2>&1 | grep -vE '^(Building|Build of product|\[[0-9]+/[0-9]+\])' || true
	@test -x $(BUILD)/ferry-cli && test -f $(BUILD)/libferry.so || { echo "build failed" >&2; exit 1; }
	@ln -sf libferry.so $(BUILD)/libferry.so.0
	@mkdir -p bin && ln -sf ../$(BUILD)/ferry-cli $(BIN)

demo: build
	@$(BIN) demo

test: build test-swift test-python

test-swift:
	$(SWIFT) test 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]'; exit $${PIPESTATUS[0]}

test-python:
	cd tests && PYTHONPATH=$(CURDIR)/python $(PYTHON) -m pytest -q $(PYTEST_ARGS)

bench-setup: setup
	@scripts/setup.sh --bench

bench: build bench-setup
	$(PYTHON) bench/run.py $(BENCH_ARGS)
	$(PYTHON) bench/render.py

clean:
	rm -rf .build bin
