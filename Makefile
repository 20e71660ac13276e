# MrHash for QGIS. `make install` is idempotent: a second run only checks stamps.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mrhash-installed
APT_PACKAGES := qgis python3-qgis qgis-providers python3-venv xvfb xauth
export QT_QPA_PLATFORM ?= offscreen

# What `make test` runs first, in this order: lint, types, the import layers (tests/checks).
LINT := $(VENV)/bin/ruff check engine research mrhash_qgis tests scripts
TYPECHECK := $(VENV)/bin/mypy --strict --cache-dir build/mypy/contract engine/mrhash_contract \
	&& $(VENV)/bin/mypy --cache-dir build/mypy/engine engine/mrhash research/mrhash_research

.PHONY: install plugin-files test test-engine test-plugin checks run package lint typecheck \
	bench clean

install: $(STAMP) plugin-files

# The contract, metadata.txt and resources/ copied into mrhash_qgis/ (no links: Windows);
# run by every target that installs, so a copy never lags its source (a hand-edited copy
# stops it instead of being overwritten). Standard library only.
plugin-files:
	@/usr/bin/python3 scripts/plugin_files.py

$(STAMP): engine/requirements.txt requirements-dev.txt engine/pyproject.toml research/pyproject.toml
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); }
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r engine/requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e engine -e research
	@touch $(STAMP)

# Engine tests run without QGIS in the process (pip's rasterio bundles its own GDAL);
# plugin tests run in real QGIS and reach the engine only through the worker process.
test: install
	$(LINT)
	$(TYPECHECK)
	$(PY) -m pytest -p no:pytest_qgis tests/checks
	$(PY) -m pytest -p no:pytest_qgis tests/engine
	$(PY) -m pytest tests/plugin

# The import layers and the plugin's copies (tests/checks: standard library, a few seconds).
checks: install
	$(PY) -m pytest -p no:pytest_qgis tests/checks

test-engine: install
	$(PY) -m pytest -p no:pytest_qgis tests/engine

test-plugin: install
	$(PY) -m pytest tests/plugin

run: install
	$(PY) scripts/run_demo.py

# Standard library only: no `make install` needed.
package:
	/usr/bin/python3 scripts/package_plugin.py

# Every benchmark of docs/BENCHMARKS.md (the 10^8-code search alone: ~20 min); figures in build/bench/.
bench: install
	scripts/run_benchmarks.sh

lint: install
	$(LINT)

typecheck: install
	$(TYPECHECK)

clean:
	rm -rf $(VENV) build dist
