# The README's two commands are `make demo` and `make test`; each does its own set-up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/hack

.PHONY: setup control-plane compat bench-venv demo test test-fast lint crds chart bundle constraints clean

setup:                ## virtual environment with every extra (pinned)
	@bash hack/setup-venv.sh

control-plane:        ## build/cache kube-apiserver, kcm, scheduler, kubectl, etcd, kwok, helm, kubeconform
	@bash hack/build-control-plane.sh >/dev/null

compat: setup         ## .venv-compat: vLLM's and upstream speculators' own code, for the compat tier
	@bash hack/setup-compat-venv.sh

bench-venv: setup     ## .venv-bench: the real GuideLLM (pinned) for the speed-up tier, and headless Chromium
	@bash hack/setup-bench-venv.sh
	@bash hack/setup-chromium.sh

demo:                 ## the main job: control plane + operator + examples, on this machine
	@bash hack/demo.sh

test:                 ## the whole suite: unit, cluster, slow and compat tiers
	@bash hack/test.sh

test-fast: setup control-plane  ## unit tests only (no cluster started, no compat venv; helm from the control-plane cache)
	@$(PY) -m pytest -m "not cluster and not slow and not compat" -q

lint: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

crds: setup           ## regenerate crds/ from the pydantic models
	@$(PY) -m speculators_operator.api.generate crds/

chart: setup          ## regenerate the charts' generated parts (CRDs, Chart.yaml, RBAC, dashboard, argocd-cm) from their sources
	@$(PY) -m release chart

bundle: chart         ## regenerate bundle/ (OLM) from the chart, crds/ and examples/ (needs helm: make control-plane)
	@$(PY) -m release bundle

constraints: setup    ## refresh requirements/constraints.txt from the current venv
	@{ head -2 requirements/constraints.txt; $(VENV)/bin/pip freeze --all --exclude-editable | grep -v -i -e '^speculators' -e '^pip=='; } > requirements/constraints.txt.new && mv requirements/constraints.txt.new requirements/constraints.txt

clean:
	rm -rf .work .pytest_cache
