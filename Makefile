# The two commands of the README:  make book  (set up + run every chapter + render the book),  make test  (all checks).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PYTHONHASHSEED := 0
# idle OpenMP threads spin and slow small torch ops on a busy machine (measured in the model chapter)
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: book test install export clean readme verdict nbtest pytest check-export bench

# fresh virtual environment with CPU torch, the package (editable) and the dev tools; redone when settings.ini changes
$(VENV)/.installed: settings.ini setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# always from scratch: a build left by an earlier (failed or older) run must never let this pass. Then check what was
# built: no chapter wrote stderr, no page loads a script, style or font from the network (tools/check_book.py).
book: install
	rm -rf book/_build
	$(BIN)/jupyter-book build book/ --all -W -n --keep-going
	$(BIN)/python tools/check_book.py
	@echo "book: open $(CURDIR)/book/_build/html/index.html"

# the library must be exactly what the notebooks export, and notebooks must carry their Jupyter Book tags
check-export: install
	$(BIN)/nbdev_export
	$(BIN)/python tools/nbtags.py --check
	@if [ -n "$$(git status --porcelain -- pmn_nb)" ]; then git status --short -- pmn_nb; \
	  echo "pmn_nb/ is stale: run 'make export' and commit"; exit 1; fi

nbtest: install
	timeout 40m $(BIN)/nbdev_test --n_workers 2 --timing

pytest: install
	timeout 20m $(BIN)/pytest -q tests

test: check-export nbtest book pytest

# after editing notebooks: export the library, tag cells for the book, strip execution counts
export: install
	$(BIN)/nbdev_export
	$(BIN)/python tools/nbtags.py
	$(BIN)/nbdev_clean

# the front page's verdict table ("The paper vs this companion"), recomputed from results/ into results/verdict/
verdict: install
	$(BIN)/python tools/verdict.py

# README.md is nbs/index.ipynb executed (after the verdict table is brought up to date); the verdict table's chapter links
# point at the book's pages (NN_name.html), which on the repository are the notebooks (nbs/NN_name.ipynb)
readme: verdict
	rm -rf README_files
	$(BIN)/jupyter nbconvert --to markdown --execute --no-input nbs/index.ipynb --output-dir . --output README
	sed -i 's|^!\[png\](README_files/|![figure](README_files/|' README.md
	sed -i -E 's#\]\(([0-9]{2}_[a-z0-9_]+)\.html\)#](nbs/\1.ipynb)#g' README.md

clean:
	rm -rf book/_build _proc _docs
