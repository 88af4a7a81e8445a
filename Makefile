# Every target works on a fresh Debian 12 machine as root: the venvs are made on demand.
VENV        ?= .venv
VENV_COMPAT ?= .venv-compat
PY          := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: test test-compat lint demo bench bench-dataplane modelcheck soak deb rpm clean

$(VENV)/.stamp: pyproject.toml scripts/bootstrap
	scripts/bootstrap $(VENV)

$(VENV_COMPAT)/.stamp: pyproject.toml scripts/bootstrap
	scripts/bootstrap $(VENV_COMPAT) compat

# The whole suite on current PyPI releases, then again on the versions Debian 12
# ships (kubernetes 22.6, urllib3 1.26, pyroute2 0.7, prometheus-client 0.16),
# leaving out the package build and the two tests that only wait out timers.
test: $(VENV)/.stamp $(VENV_COMPAT)/.stamp lint
	$(PY) -m pytest -q $(PYTEST_ARGS) tests
	$(VENV_COMPAT)/bin/python -m pytest -q $(PYTEST_ARGS) -m "not slow" tests/unit tests/integration

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check litelb tests bench
	$(VENV)/bin/ruff format --check litelb tests bench

demo: $(VENV)/.stamp
	$(PY) -m bench.demo

bench: $(VENV)/.stamp
	$(PY) -m bench.run

# The leader protocol's model check, larger than the test's 2,100 runs.
modelcheck: $(VENV)/.stamp
	$(PY) -m tests.model.protocol --runs $(or $(MODEL_RUNS),20000)

# Three daemons under rotating faults; SOAK_MINUTES=180 for 3 h.
soak: $(VENV)/.stamp
	$(PY) -m bench.soak --minutes $(or $(SOAK_MINUTES),30)
# What a client sees through the VIP, litelb side by side with keepalived + haproxy.
bench-dataplane: $(VENV)/.stamp
	command -v keepalived >/dev/null && command -v haproxy >/dev/null || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq keepalived haproxy curl >/dev/null; }
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	$(PY) -m bench.dataplane

deb:
	scripts/build-deb

rpm:
	scripts/build-rpm

clean:
	rm -rf $(VENV) $(VENV_COMPAT) build dist out *.egg-info
