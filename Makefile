# Two commands: `make demo` (set up + run the default demo) and `make test`
# (set up + run the test suite). Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU default is reproducible: every install below pins to constraints.txt (pyproject.toml holds ranges).
PIP_INSTALL := $(BIN)/python -m pip install -q -c constraints.txt

.PHONY: demo test test-extended lint bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/populax train --config configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --durations=15 -n 2 --dist loadfile

# The rest of the feature matrices (algorithm x backend x strategy cells beyond one per path) and the long runs
# (learning comparisons, Ray recoveries) whose path has a cheaper default cell; CI runs it after `test`.
test-extended: $(STAMP)
	$(BIN)/python -m pytest -q -x --durations=10 -n 2 --dist loadfile -m extended

lint: $(STAMP)
	$(BIN)/ruff check populax tests benchmarks examples

# The paper's Figure 2 on this machine (installs the optional torch extra).
bench: $(STAMP)
	$(PIP_INSTALL) -e '.[dev,torch]'
	$(BIN)/populax bench update-step --algo td3 --pop 1,2,4,8,16,32,64 --impl all --out docs/bench/update-step-td3.json
	$(BIN)/populax bench update-step --algo sac --pop 1,2,4,8,16,32 --impl all --out docs/bench/update-step-sac.json
	$(BIN)/populax bench update-step --algo dqn --pop 1,2,4,8,16 --impl all --out docs/bench/update-step-dqn.json
	$(BIN)/populax bench update-step --algo td3 --pop 1,4,16 --steps-at-once 50 --calls 10 --rounds 5 \
	    --impl jax-sequential,jax-vmap,jax-sharded,torch-sequential,torch-vectorized,auto --out docs/bench/update-step-td3-k50.json

clean-venv:
	rm -rf $(VENV)
