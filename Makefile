# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv and installs what it needs).
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

.PHONY: demo test setup setup-test

setup:
	@scripts/bootstrap.sh $(VENV)

setup-test:
	@scripts/bootstrap.sh $(VENV) test

demo: setup
	$(PY) -m langneurons demo --out $(OUT)

test: setup-test
	$(PY) -m pytest
