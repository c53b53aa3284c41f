# Two entry points for a fresh machine (see README.md):
#   make demo   set up .venv and run the embedded default (CPU pre-training, then transfer)
#   make test   set up .venv and run the test suite and the CPU ReFrame checks, with the CI's
#               two-node SLURM cluster up (scripts/ci/with-slurm.sh; root and Debian only)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test pytest reframe-ci container-test clean

$(STAMP): requirements.lock requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/xferscale pretrain
	$(BIN)/xferscale transfer

pytest: setup
	$(BIN)/python -m pytest

reframe-ci: setup
	PATH=$(abspath $(BIN)):$$PATH bash checks/run_ci.sh

# The cluster is started once for both and stopped afterwards, whatever their outcome.
test: setup
	scripts/ci/with-slurm.sh $(MAKE) --no-print-directory pytest reframe-ci

# Build the Dockerfile with podman on a local stand-in for NGC and test the image (root, Debian).
container-test: setup
	bash scripts/ci/container-test.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
