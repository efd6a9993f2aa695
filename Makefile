# The README's two commands, and the set-up they share.
#   make train   set up, unpack the real data, train + evaluate BoT (OSNet x0.25, CPU) on Occluded-Duke
#   make test    set up, unpack the real data, run the test suite
#   make docs    build the documentation site into site/ (mkdocs build --strict: any warning fails; the set-up
#                runs first when .venv lacks the documentation tools)
# Variables: CONFIG (a config file), OPTS (trailing KEY VALUE overrides), OCCREID_DATA (data folder).

SHELL := /bin/bash
PY := .venv/bin/python
OCCREID_DATA ?= $(HOME)/.cache/occreid/data
CONFIG ?= projects/BoT/configs/occluded_duke_osnet_x0_25_cpu.yml
OPTS ?=
export OCCREID_DATA

.PHONY: env data train test docs
env:
	bash scripts/setup_env.sh

data:
	bash ../shared/tools/unpack_data.sh "$(OCCREID_DATA)"

train: env data
	FASTREID_DATASETS="$(OCCREID_DATA)" $(PY) train_net.py --config-file $(CONFIG) $(OPTS)

test: env data
	$(PY) -m pytest -q --durations=25 tests

# NO_MKDOCS_2_WARNING: mkdocs-material prints a banner about MkDocs 2.0 on every build; it is not about this site.
docs:
	@$(PY) -c "import mkdocs, mkdocstrings_handlers.python" 2>/dev/null || bash scripts/setup_env.sh
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site
