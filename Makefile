# The two commands at the top of README.md: `make run` and `make test`.
# Both create .venv when it is missing and install everything the project needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tvad-installed
HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: run test lint setup browser clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=25" setuptools wheel
	# torch first, so that sam2 builds against it without an isolated build env
	# (which would copy several GB of torch again); sam2's CUDA op is optional.
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --no-build-isolation sam2==1.1.0
	$(PY) -m pip install -r requirements-test.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian's Chromium for the browser tests (Playwright never downloads its own).
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium; }

run: $(STAMP)
	TVAD_HOST=$(HOST) TVAD_PORT=$(PORT) $(PY) app.py

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)

# `make tiny`: the recipe of the shipped default model (SynthCampus -> corpus -> stages 0/1/2 -> eval).
include mk/tiny.mk
# `make profiles`: the shipped scene profiles (profiles/ucsd_ped2, profiles/cuhk_avenue).
include mk/profiles.mk
