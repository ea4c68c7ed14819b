# The README's two commands are `make demo` and `make test`. Both set up .venv first;
# set-up is skipped while its inputs are unchanged (the stamp name is a hash of them).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_INPUTS := requirements.txt requirements-ros.txt constraints.txt setup.py setup.cfg package.xml \
	tools/setup_venv.sh regionblip_msgs/CMakeLists.txt regionblip_msgs/cmake/repoint_pip_wheel_includes.cmake \
	regionblip_msgs/package.xml \
	$(sort $(wildcard regionblip_msgs/msg/*.msg regionblip_msgs/srv/*.srv))
SETUP_KEY := $(shell cat $(SETUP_INPUTS) | sha256sum | cut -c1-16)$(if $(ROS_DISTRO),-$(ROS_DISTRO))
STAMP := $(VENV)/.setup-$(SETUP_KEY)

# Tests talk DDS on this machine only; each test picks its own ROS_DOMAIN_ID.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup test test-slow demo clean train-default

help:
	@echo "make demo       run the embedded default model end to end (sets up .venv first)"
	@echo "make test       run the test suite (sets up .venv first)"
	@echo "make test-slow  run the heavy tests too"
	@echo "make setup      only create/refresh .venv"
	@echo "make clean      remove .venv and build/"

setup: $(STAMP)

$(STAMP):
	@rm -f $(VENV)/.setup-*
	VENV=$(VENV) tools/setup_venv.sh
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	@if [ ! -f models/default/model.safetensors ]; then \
		echo "make demo: models/default/model.safetensors is missing: training the default model first (make train-default)"; \
		$(MAKE) --no-print-directory train-default; \
	fi
	$(PY) -m tools.demo --checkpoint models/default --bundle bundles/default --out demo_out

clean:
	rm -rf $(VENV) build

# The three stages from scratch (runs/default/{vision,blip2,regionblip}), then models/default/ (committed).
# The evaluation checks the held-out scores and that stage 2 left the image modality bit-identical to stage 1.
train-default: $(STAMP)
	$(PY) -m training.train --config config/train_default.yaml --overwrite
	$(PY) -m training.evaluate --ckpt models/default --compare-image runs/default/blip2/final --num 200 --seed 1 \
		--data synthetic:image_region,pointcloud_region,pointcloud,image --out runs/default/eval.json
