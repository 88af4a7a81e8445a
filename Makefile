# Every target works on a fresh Debian 12 machine as root: the venvs are made on demand.
VENV        ?= .venv
VENV_COMPAT ?= .venv-compat
PY          := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: test test-current test-compat test-py39 test-packages roots lint demo bench bench-control bench-dataplane modelcheck soak deb rpm clean

$(VENV)/.stamp: pyproject.toml scripts/bootstrap
	scripts/bootstrap $(VENV)

$(VENV_COMPAT)/.stamp: pyproject.toml scripts/bootstrap
	scripts/bootstrap $(VENV_COMPAT) compat

# pytest exits 5 when a selection holds no tests (e.g. PYTEST_ARGS=-k that matches
# nothing in one part): not a failure.
NO_TESTS_OK = || [ $$? -eq 5 ]
# Each part's start time in the log, for the duration of each.
SECTION = @echo "== make $@: $$(date -u +%T)"

# Everything, as root on a Debian 12 machine (CI runs exactly this):
test: lint roots test-current test-compat test-py39 test-packages
	$(SECTION)

# The whole suite on current PyPI releases (Python 3.11), but the packages.
test-current: $(VENV)/.stamp
	$(SECTION)
	$(PY) -m pytest -q $(PYTEST_ARGS) -m "not packaging" tests $(NO_TESTS_OK)

# The property tests run their full 10,000 cases per parser in test-current; the other
# interpreters and library lines repeat them with fewer cases.
FEWER_CASES = LITELB_PARSER_CASES=500 LITELB_FUZZ_EXAMPLES=500 LITELB_PROPERTY_CASES=250

# Again on the versions Debian 12 ships (kubernetes 22.6, urllib3 1.26, pyroute2 0.7,
# prometheus-client 0.16), leaving out the two tests that only wait out timers.
test-compat: $(VENV_COMPAT)/.stamp
	$(SECTION)
	$(FEWER_CASES) $(VENV_COMPAT)/bin/python -m pytest -q $(PYTEST_ARGS) \
		-m "not slow and not packaging" \
		tests/unit tests/integration $(NO_TESTS_OK)

# Again on Python 3.9 (RHEL 9's interpreter; Debian 11's here) with current PyPI releases.
test-py39:
	$(SECTION)
	$(FEWER_CASES) scripts/test-py39 $(PYTEST_ARGS) $(NO_TESTS_OK)

# The .deb installed and run under systemd on Debian 12 and 13 (with its autopkgtest),
# the .rpm installed, upgraded and erased by rpm, and both rebuilt byte for byte.
test-packages: $(VENV)/.stamp
	$(SECTION)
	$(PY) -m pytest -q $(PYTEST_ARGS) -m packaging tests/packaging $(NO_TESTS_OK)

# The cached Debian roots (/var/cache/litelb-test) the last two need, built side by
# side on a fresh machine (a few minutes), reused afterwards.
roots:
	$(SECTION)
	python3 -m tests.packaging.rootfs bookworm trixie py39 >/dev/null

lint: $(VENV)/.stamp
	$(SECTION)
	$(VENV)/bin/ruff check litelb tests bench
	$(VENV)/bin/ruff format --check litelb tests bench
	$(VENV)/bin/lint-imports

demo: $(VENV)/.stamp
	$(PY) -m bench.demo

# Every figure: the control plane (about 8 minutes), then what a client sees next to
# keepalived + haproxy (about 90 minutes for 5 repetitions of every fault).
bench: bench-control bench-dataplane

bench-control: $(VENV)/.stamp
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
