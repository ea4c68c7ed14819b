# The README's two commands are `make demo` and `make test`. Both set up .venv first;
# set-up is skipped while its inputs are unchanged (the stamp name is a hash of them).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_INPUTS := requirements.txt requirements-ros.txt constraints.txt setup.py setup.cfg package.xml \
	tools/setup_venv.sh regionblip_msgs/CMakeLists.txt regionblip_msgs/package.xml \
	$(sort $(wildcard regionblip_msgs/msg/*.msg regionblip_msgs/srv/*.srv))
SETUP_KEY := $(shell cat $(SETUP_INPUTS) | sha256sum | cut -c1-16)$(if $(ROS_DISTRO),-$(ROS_DISTRO))
STAMP := $(VENV)/.setup-$(SETUP_KEY)

# Tests talk DDS on this machine only; each test picks its own ROS_DOMAIN_ID.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup test test-slow demo clean

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
	@echo "make demo: the end-to-end demo arrives with issue #8. It will use models/default"
	@echo "(training it with 'make train-default' if missing), export the ONNX bundle, start the"
	@echo "region_describer bringup with a simulated camera + LiDAR + detector for ~20 s, print"
	@echo "each described frame, and write demo_out/ (annotated images, summary.json)."

clean:
	rm -rf $(VENV) build
