# The two commands of the README: `make demo` and `make test`.
# Everything lives in .venv; llama-cpp-python is built once (see scripts/install-llama-cpp.sh).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
.PHONY: demo test test-fast fuzz setup setup-demo setup-dev lint proto bench bench-broker bench-escalation bench-confidence bench-daemon bench-embeddings bench-strategies bench-merging bench-ray clean

# Starts a local broker (Gemma-3-270M) and answers sample prompts on the device or
# through it, printing the reason for each (scripts/demo.py).
demo: setup-demo
	$(BIN)/edge-agent models pull
	$(BIN)/edge-agent models pull gemma3-270m
	$(BIN)/python scripts/demo.py

test: lint
	$(BIN)/pytest

# The inner loop: lint, then every test that needs no model and starts no process
# (tests/lanes.py), with a fresh model store. `make test` runs everything.
test-fast: lint
	env -u RIDGELINE_TEST_STORE RIDGELINE_TEST_LANE=fast $(BIN)/pytest -q

# The property-based tests (hypothesis) with many more examples than `make test` gives
# them: minutes, not seconds, so it is not part of CI. RIDGELINE_FUZZ selects the long
# profile (tests/conftest.py); each run draws new examples.
fuzz: setup-dev
	RIDGELINE_FUZZ=1 $(BIN)/pytest -q -m property

# The script is a no-op when .venv already has a build with the same flags, and
# rebuilds when LLAMA_CMAKE_ARGS changes.
setup: $(VENV)/.installed-edge
	@scripts/install-llama-cpp.sh $(BIN)/python
setup-demo: $(VENV)/.installed-demo
	@scripts/install-llama-cpp.sh $(BIN)/python
setup-dev: $(VENV)/.installed-dev
	@scripts/install-llama-cpp.sh $(BIN)/python

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# scripts/setup-venv.sh compiles llama-cpp-python (scripts/install-llama-cpp.sh) while uv
# (or pip) installs everything else, then installs the project with the extras.
SETUP_VENV := scripts/setup-venv.sh scripts/install-llama-cpp.sh scripts/requirements.py

$(VENV)/.installed-edge: pyproject.toml $(SETUP_VENV) | $(BIN)/python
	scripts/setup-venv.sh $(BIN)/python edge
	touch $@

$(VENV)/.installed-demo: pyproject.toml $(SETUP_VENV) | $(BIN)/python
	scripts/setup-venv.sh $(BIN)/python edge,broker
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(SETUP_VENV) | $(BIN)/python
	scripts/setup-venv.sh $(BIN)/python edge,broker,onnx,plot,dev,ray
	touch $@

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

proto: setup-dev
	$(BIN)/python tools/genproto.py

bench: setup
	$(BIN)/python benchmarks/local_generation.py

# What the broker adds over a fast OpenAI-compatible stub, against LiteLLM's proxy. LiteLLM
# lives in its own venv, never in the project's (version pinned to the one measured).
# Extra flags: make bench-broker BENCH_ARGS=--profile
bench-broker: setup-dev
	test -x .venv-litellm/bin/litellm || { $(PYTHON) -m venv .venv-litellm && \
		.venv-litellm/bin/pip install --quiet 'litellm[proxy]==1.108.7'; }
	$(BIN)/python benchmarks/broker_overhead.py --litellm .venv-litellm/bin/litellm $(BENCH_ARGS)

# What the edge agent's decision and escalation cost (stub broker on loopback), and what early
# abort and pre-route save. Needs SmolLM2 in the store (edge-agent models pull).
# Extra flags: make bench-escalation BENCH_ARGS="--store /tmp/st --quick"
bench-escalation: setup-dev
	$(BIN)/python benchmarks/escalation.py $(BENCH_ARGS)

# How well each confidence variant predicts a right answer, and what it costs (about 20 min on
# 2 cores: every probe over 497 questions, then the shipped variants against answers of the
# agent's default length). Extra flags: BENCH_ARGS="--limit 40"
bench-confidence: setup-dev
	$(BIN)/python benchmarks/confidence.py --agent-tokens 256 $(BENCH_ARGS)

# Model merging (issue 20): the encoder fine-tuned on home-intents with torch (the `bench`
# extra), merged with its base by each method; self-merges of SmolLM2 and Gemma for time,
# memory and identity (about 15 min on 2 cores). BENCH_ARGS="--cost-only" skips the
# fine-tune; "--mergekit /path/to/venv/bin/python" compares with mergekit.
bench-merging: setup-dev
	$(BIN)/pip install --quiet -e '.[edge,broker,onnx,plot,dev,ray,bench]'
	$(BIN)/python benchmarks/merging.py $(BENCH_ARGS)

# The broker on Ray Serve against one process, the shared limit, 1 vs 2 replicas, and the
# calibration on Ray Data (benchmarks/ray_scale.py; the models come from the store).
bench-ray: setup-dev
	$(BIN)/edge-agent models pull
	$(BIN)/python benchmarks/ray_scale.py $(BENCH_ARGS)

# ONNX Runtime (fp32, int8) against sentence-transformers on torch (the `bench` extra).
bench-embeddings: setup-dev
	$(BIN)/pip install --quiet -e '.[edge,broker,onnx,plot,dev,ray,bench]'
	$(BIN)/python benchmarks/embeddings.py $(BENCH_ARGS)

# The edge daemon: HTTP overhead against the in-process SDK (and a bare aiohttp floor),
# memory, and 4-client throughput next to llama_cpp.server (about 5 min on 2 cores).
bench-daemon: setup-dev
	$(BIN)/python benchmarks/daemon.py $(BENCH_ARGS)

# Routing, cascades and ensembles of SmolLM2 and Gemma through a real broker (issue 17):
# report from the committed outcome files; STRATEGIES_STEPS="collect run report" answers
# everything again first (collect about 12 min on 2 cores). Extra flags: BENCH_ARGS.
STRATEGIES_STEPS ?= report
bench-strategies: setup-dev
	for step in $(STRATEGIES_STEPS); do $(BIN)/python benchmarks/strategies.py $$step $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
