# The README's two commands, and the set-up they share.
#   make train   set up, unpack the real data, train + evaluate BoT (OSNet x0.25, CPU) on Occluded-Duke
#   make test    set up, unpack the real data, run the test suite
# Variables: CONFIG (a config file), OPTS (trailing KEY VALUE overrides), OCCREID_DATA (data folder).

SHELL := /bin/bash
PY := .venv/bin/python
OCCREID_DATA ?= $(HOME)/.cache/occreid/data
CONFIG ?= projects/BoT/configs/occluded_duke_osnet_x0_25_cpu.yml
OPTS ?=
export OCCREID_DATA

.PHONY: env data train test
env:
	bash scripts/setup_env.sh

data:
	bash ../shared/tools/unpack_data.sh "$(OCCREID_DATA)"

train: env data
	FASTREID_DATASETS="$(OCCREID_DATA)" $(PY) train_net.py --config-file $(CONFIG) $(OPTS)

test: env data
	$(PY) -m pytest -q --durations=25 tests
