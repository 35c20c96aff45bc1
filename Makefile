# Two entry points: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[train,test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash docs/demo.sh demo-out

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

bench: $(STAMP)
	for b in store simulate sim_bench preprocess resample train acquire stream trust_cost model_cost stream_abuse view; do $(PY) bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) demo-out .pytest_cache
