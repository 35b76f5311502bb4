# stfuse — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: install demo test sample bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stfuse predict -o $(OUT) --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

sample: $(STAMP)
	$(BIN)/stfuse sample -o sample_scenes --overwrite

bench: $(STAMP)
	$(BIN)/python -m stfuse.bench --out docs/benchmarks.md

clean:
	rm -rf $(VENV) out build *.egg-info
