# The README's two commands are `make figures` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
PROFILE ?= tiny

.PHONY: install figures experiments test lab clean gpu-check

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency lists change; an up-to-date environment costs nothing.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	@# setuptools tells every editable install, in a screen of stars, that same-named folders may shadow it
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch {v} installed, 2.13.0 required')"
	touch $(STAMP)

install: $(STAMP)

figures: $(STAMP)
	$(PY) -m chexreason_utils run --profile $(PROFILE)

# The pre-registered training grids (stage 08_experiments), reusing 00-07 when current: figures/<profile>/EXPERIMENTS.md
experiments: $(STAMP)
	$(PY) -m chexreason_utils run --profile $(PROFILE) --experiments

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# On a CUDA machine: a few SFT / GRPO steps and an evaluation batch with the real models (docs/paper_profile.md, GPU check)
gpu-check: $(STAMP)
	$(PY) -m chexreason_utils gpu-check

# Loopback only, with Jupyter's login token; --allow-root only where run as root (containers, cloud notebooks).
USER_ID ?= $(shell id -u)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser $(if $(filter 0,$(USER_ID)),--allow-root) notebooks/

clean:
	rm -rf runs
