# The two commands of the README: `make demo` and `make test` (both install first, idempotently).
PY ?= python3
export HF_HUB_OFFLINE = 1
export HF_DATASETS_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export WANDB_MODE = offline
export TOKENIZERS_PARALLELISM = false

.PHONY: install demo test

install:
	bash scripts/install.sh

demo: install
	bash scripts/demo.sh

test: install
	bash scripts/test.sh
