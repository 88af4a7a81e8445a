# Every target works on a fresh Debian 12 machine as root: the venvs are made on demand.
VENV        ?= .venv
VENV_COMPAT ?= .venv-compat
PY          := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: test test-compat lint demo bench deb rpm clean

$(VENV)/.stamp: pyproject.toml scripts/bootstrap
	scripts/bootstrap $(VENV)

$(VENV_COMPAT)/.stamp: pyproject.toml scripts/bootstrap
	scripts/bootstrap $(VENV_COMPAT) compat

# The tests whose libraries differ between Debian 12 and current PyPI releases
# (kubernetes 22.6/urllib3 1.26, pyroute2 0.7, prometheus-client 0.16), plus one
# daemon end to end.
COMPAT_TESTS := tests/unit tests/integration/test_kube_source.py \
	tests/integration/test_nsx_client.py tests/integration/test_vip_netns.py \
	tests/integration/test_daemon_single.py::test_creates_route_adds_vip_and_talks_to_systemd

# The whole suite on current PyPI releases, then again on Debian 12's versions.
test: $(VENV)/.stamp $(VENV_COMPAT)/.stamp lint
	$(PY) -m pytest -q $(PYTEST_ARGS) tests
	$(VENV_COMPAT)/bin/python -m pytest -q $(PYTEST_ARGS) $(COMPAT_TESTS)

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check litelb tests bench
	$(VENV)/bin/ruff format --check litelb tests bench

demo: $(VENV)/.stamp
	$(PY) -m bench.demo

bench: $(VENV)/.stamp
	$(PY) -m bench.run

deb:
	scripts/build-deb

rpm:
	scripts/build-rpm

clean:
	rm -rf $(VENV) $(VENV_COMPAT) build dist out *.egg-info
