VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= examples/demo/config.json
PEERS := bench/.peers
PROTOS := $(wildcard protos/mcpgw/v1/*.proto)

NODE_TESTS := tests/node

.PHONY: run test lint protos protos-check install clean bench bench-peers bench-smoke bench-scale profile conformance soak drills catalog scale-test system-deps

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The official conformance suite, Node 22 to run it, and the TypeScript client the tests drive.
$(NODE_TESTS)/node_modules/.installed: $(NODE_TESTS)/package-lock.json
	npm ci --prefix $(NODE_TESTS) --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed $(NODE_TESTS)/node_modules/.installed system-deps

# Debian's HAProxy, the balancer of the scale test, and Chromium, the browser of the console's
# tests (each installed when missing and we are root).
system-deps:
	@command -v haproxy >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -q haproxy >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q haproxy >/dev/null; }) ; } || \
	  echo "haproxy is not installed: the scale test will be skipped"
	@[ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }) ; } || \
	  echo "chromium is not installed: the console's browser tests will be skipped"

## Start the whole gateway on the demo config (Ctrl-C stops everything).
run: install
	PATH=$(abspath $(VENV))/bin:$$PATH mcpgw up --config $(CONFIG) \
	  --sidecar "python examples/servers/clock_http.py --port 8931"

## Unit, integration and end-to-end tests (the conformance suite included).
test: install
	$(PY) -m pytest --durations=25 tests/unit tests/integration tests/e2e

## The official MCP conformance suite against /mcp/{server} and /mcp of a running gateway.
conformance: install
	$(PY) -m pytest -v tests/e2e/test_conformance.py

## The gateway against a direct connection to the same downstream, beside the stack's floor
## (bench/floor_server.py: the same libraries without mcpgw's logic); a few minutes.
bench: install
	$(PY) -m bench.run $(BENCH_ARGS)

## The same run with peers added (installs them first): the gateways IBM ContextForge and
## FastMCP's proxy, and the one-hop stdio bridges mcp-proxy (PyPI) and supergateway (npm).
bench-peers: install $(PEERS)/contextforge/.installed $(PEERS)/fastmcp/.installed \
  $(PEERS)/mcp-proxy/.installed $(PEERS)/supergateway/.installed
	$(PY) -m bench.run --peers contextforge,fastmcp,mcp-proxy,supergateway $(BENCH_ARGS)

## A few seconds of every bench measurement, no targets asserted (CI runs it).
bench-smoke: install
	$(PY) -m bench.run --smoke

## How cost grows: concurrency, in-flight calls, catalog size, servers, open streams (curves and plots; several minutes).
bench-scale: install
	$(PY) -m bench.curves $(CURVES_ARGS)

## Tokens and model round trips over a 313-tool catalog: classic vs Code Mode vs tool search.
catalog: install
	$(PY) -m bench.catalog

## deploy/docker-compose.yml as separate hosts (network namespaces), broken piece by piece under load (root).
scale-test: install
	$(PY) -m bench.scale $(SCALE_ARGS)

## Memory of every mcpgw process over 20,000 streamed calls, each cancelled (about 2 minutes).
soak: install
	$(PY) -m bench.soak $(SOAK_ARGS)

## Failure drills under load: kill -9 of every service, closed port, slow clients, sessions, hostile input.
drills: install
	$(PY) -m bench.drills $(DRILLS_ARGS)

## py-spy flame graphs of every mcpgw process under load.
profile: install
	$(PY) -m bench.profile $(PROFILE_ARGS)

$(PEERS)/contextforge/.installed:
	python3 -m venv $(PEERS)/contextforge
	$(PEERS)/contextforge/bin/pip install --quiet 'mcp-contextforge-gateway>=1.0.7'
	touch $@

$(PEERS)/fastmcp/.installed:
	python3 -m venv $(PEERS)/fastmcp
	$(PEERS)/fastmcp/bin/pip install --quiet 'fastmcp>=2.10'
	touch $@

$(PEERS)/mcp-proxy/.installed:
	python3 -m venv $(PEERS)/mcp-proxy
	$(PEERS)/mcp-proxy/bin/pip install --quiet 'mcp-proxy>=0.13'
	touch $@

$(PEERS)/supergateway/.installed:
	mkdir -p $(PEERS)/supergateway
	npm install --prefix $(PEERS)/supergateway --no-audit --no-fund --loglevel=error 'supergateway@^4'
	touch $@

lint: install protos-check
	$(VENV)/bin/ruff check services tests examples bench
	$(VENV)/bin/ruff format --check services tests examples bench
	$(VENV)/bin/mypy services tests examples bench

## Regenerate the gRPC stubs under services/contracts/ from protos/.
protos: install
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m grpc_tools.protoc \
	  -Iservices/contracts=protos \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
	  $(patsubst protos/%,services/contracts/%,$(PROTOS))
	touch services/contracts/mcpgw/__init__.py services/contracts/mcpgw/v1/__init__.py

## Fails when the committed stubs differ from what protos/ generates.
protos-check: install
	@tmp=$$(mktemp -d) && cp -r services/contracts/mcpgw $$tmp/before && \
	  $(MAKE) --no-print-directory protos >/dev/null && \
	  diff -r -I "^GRPC_GENERATED_VERSION = " $$tmp/before services/contracts/mcpgw >/dev/null || \
	  { echo "stale stubs: run 'make protos' and commit services/contracts/"; rm -rf $$tmp; exit 1; }; \
	  rm -rf $$tmp; echo "stubs are current"

clean:
	rm -rf $(VENV) .state $(NODE_TESTS)/node_modules
