# Two commands for a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install data lint browser bench bench-fooling train-lenet docs-images docs-check clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@# torchattacks (a reference in tests) pins requests 2.25, which cannot read event streams; it never imports it
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps 'torchattacks>=3.5'
	@touch $(STAMP)

install: $(STAMP)

# MNIST (sha256-checked) and the control photos (from Debian packages, sha256-checked; without apt-get
# the ImageNet controls are only the sample photo, said plainly)
data: install
	$(PY) -m app fetch-mnist
	$(PY) -m app fetch-photos || echo "warning: no control photos (see the message above); studies on ImageNet models have fewer controls"

# The server starts without MNIST too (where it cannot be fetched): what needs it says so.
run: install
	$(PY) -m app fetch-mnist || echo "warning: no MNIST digits (see the message above): no real digits in the quiz, no detectors in the arena"
	$(PY) -m app fetch-photos || echo "warning: no control photos (see the message above); studies on ImageNet models have fewer controls"
	$(VENV)/bin/fooling-lab serve

lint: install
	$(PY) -m ruff check app tests bench docs/examples docs/make_images.py docs/figures.py

# Browser tests drive Debian's Chromium (never a downloaded browser); install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) \
		|| echo "warning: could not install chromium; browser tests will fail (FOOLING_SKIP_BROWSER=1 skips them)"

# Every figure in README.md and docs/ that comes from bench/results or docs/images/runs.json
# equals its JSON (docs/figures.py; `python docs/figures.py` rewrites them)
docs-check: install
	$(PY) docs/figures.py --check

# Two workers (pytest-xdist), each module's tests together: its server and fixtures are made once
test: install data lint browser docs-check
	$(PY) -m pytest -n 2 --dist loadfile

bench: install
	$(PY) bench/score.py

bench-fooling: data
	$(PY) bench/fooling.py

# The README's pictures, from real runs (a server of its own, Chromium for the pages): docs/images/
docs-images: data browser
	$(PY) docs/make_images.py

train-lenet: data
	$(PY) -m app train-lenet --seed 0

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
