# Set-up on a fresh machine, then the demo or the tests.
PY ?= python3

.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m eecompile.cli demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_core.py
