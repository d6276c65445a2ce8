# The two commands the README opens with:
#   make run    the hub in embedded mode (SQLite, no Kafka) with sample data flowing
#   make test   the whole test suite, starting every server the tests need
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test serve contracts clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/s117hub demo

test: $(STAMP)
	$(VENV)/bin/python -m tests.run

serve: $(STAMP)
	$(VENV)/bin/s117hub serve

contracts: $(STAMP)
	$(VENV)/bin/s117hub contracts

clean:
	rm -rf $(VENV) var .pytest_cache
