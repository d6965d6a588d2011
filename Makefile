# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv if missing, install, run the main job
#   make test   create .venv if missing, install, lint (ruff), run the default test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo lint test test-fast test-slow bench browser clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) jobs/demo.py $(ARGS)

# The browser test drives Debian's Chromium (no browser download by Playwright).
browser:
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y --no-install-recommends chromium)

lint: $(STAMP)
	$(PY) -m ruff check .

# The full default suite (what CI runs): lint first, then every test not marked slow.
test: lint browser
	$(PY) -m pytest $(ARGS)

# Quick feedback (about a minute): no Ray cluster, no browser, no Java, none of the tests that take seconds each.
# Markers and their rules: pyproject.toml [tool.pytest.ini_options] and tests/conftest.py.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not ray and not browser and not java and not heavy" $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(ARGS)

bench: $(STAMP)
	$(PY) bench/run_all.py $(ARGS)

clean:
	rm -rf outputs .pytest_cache
