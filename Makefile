# MrHash for QGIS. `make install` is idempotent: a second run only checks stamps.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mrhash-installed
APT_PACKAGES := qgis python3-qgis qgis-providers python3-venv xvfb xauth
export QT_QPA_PLATFORM ?= offscreen

.PHONY: install test test-engine test-plugin run package lint bench clean

install: $(STAMP)

$(STAMP): engine/requirements.txt requirements-dev.txt engine/pyproject.toml
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); }
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r engine/requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e engine
	@touch $(STAMP)

# Engine tests run without QGIS in the process (pip's rasterio bundles its own GDAL);
# plugin tests run in real QGIS and reach the engine only through the worker process.
test: install
	$(PY) -m pytest -p no:pytest_qgis tests/engine
	$(PY) -m pytest tests/plugin

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
	$(VENV)/bin/ruff check engine mrhash_qgis tests scripts

clean:
	rm -rf $(VENV) build dist
