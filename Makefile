# The README's two commands are `make figures` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
PROFILE ?= tiny

.PHONY: install lock figures experiments test lab clean gpu-check

$(PY):
	$(PYTHON) -m venv $(VENV)

# PORTABLE=1: the same bytes on any x86-64 CPU with AVX2 (arithmetic.py; how the committed figures were made).
ARITHMETIC := $(if $(PORTABLE),-p arithmetic=portable)

# Reinstall only when the lock changes; an up-to-date environment costs nothing. Every package comes from
# requirements.lock at its exact version and hash (torch the CPU build 2.13.0, no torchvision); the project itself
# is installed on top without dependencies.
$(STAMP): requirements.lock pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	@# setuptools tells every editable install, in a screen of stars, that same-named folders may shadow it
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch {v} installed, 2.13.0 required')"
	touch $(STAMP)

install: $(STAMP)

# Upgrading the environment: re-resolve pyproject.toml into requirements.lock (pip-tools, hashes included; torch
# held at 2.13.0 by constraints.txt) and rewrite environment.yml from it. Then make install.
lock: | $(PY)
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --extra test --strip-extras --no-emit-index-url \
		--no-emit-find-links --no-emit-trusted-host -c constraints.txt -o requirements.lock pyproject.toml
	$(PY) -m chexreason_utils.lock

figures: $(STAMP)
	$(PY) -m chexreason_utils run --profile $(PROFILE) $(ARITHMETIC)

# The pre-registered training grids (stage 08_experiments), reusing 00-07 when current: figures/<profile>/EXPERIMENTS.md
experiments: $(STAMP)
	$(PY) -m chexreason_utils run --profile $(PROFILE) --experiments $(ARITHMETIC)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# On a CUDA machine: a few SFT / GRPO steps and an evaluation batch with the real models (docs/paper_profile.md, GPU check)
gpu-check: $(STAMP)
	$(PY) -m chexreason_utils gpu-check

# Loopback only, with Jupyter's login token; --allow-root only where run as root (containers, cloud notebooks).
USER_ID ?= $(shell id -u)
lab: $(STAMP)
	$(if $(PORTABLE),$(PY) -m chexreason_utils.arithmetic portable) $(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser $(if $(filter 0,$(USER_ID)),--allow-root) notebooks/

clean:
	rm -rf runs
