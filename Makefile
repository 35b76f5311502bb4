# stfuse — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: install demo test lint wheel-check sample bench region regions weights calibration clean report
REGIONS := $(basename $(notdir $(wildcard regions/*.yaml)))

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stfuse predict -o $(OUT) --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

wheel-check: $(STAMP)
	tools/check_wheel.sh

sample: $(STAMP)
	$(BIN)/stfuse sample -o sample_scenes --overwrite

bench: $(STAMP)
	$(BIN)/python tools/bench.py --out docs/benchmarks.md

report: $(STAMP)
	$(BIN)/python tools/report.py docs/images --work out/report

weights: $(STAMP)
	$(BIN)/stfuse train --synthetic --seed 0 -o stfuse/weights/refiner.pt --overwrite

calibration: $(STAMP)
	$(BIN)/python tools/calibration.py

region: $(STAMP)
	@test -n "$(REGION)" || { echo "usage: make region REGION=name   (one of: $(REGIONS))"; exit 2; }
	$(BIN)/stfuse region regions/$(REGION).yaml -o out/regions/$(REGION)

regions: $(STAMP)
	@for r in $(REGIONS); do $(BIN)/stfuse region regions/$$r.yaml -o out/regions/$$r || exit 1; done

clean:
	rm -rf $(VENV) out build *.egg-info
