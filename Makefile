# edgeshard — run `make help` for the targets.
GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
BUILD     := build
WASMENV   := GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0
WASMBUILD := $(WASMENV) $(GO) build -buildmode=c-shared -trimpath
PLUGINS   := ratelimit runtimeevents counters
EXAMPLES  := counter leaderboard idempotency presence tutorial chat
# The non-Go examples: C with clang and wasi-libc, WAT with wabt (make deps).
CWASM     := clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror -Wl,--strip-debug -I abi/include
CONFIG    ?= edgeshard.toml
TESTFLAGS ?= -race -count=1 -timeout 30m

.PHONY: help build plugins deps run test check fuzz crash-test crash-test-fleet crash-test-cluster bench bench-quick bench-peers clean

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

build: plugins ## build the edgeshard binary and every plugin
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BUILD)/edgeshard ./cmd/edgeshard

plugins: ## build plugins and examples to build/plugins and build/examples (c-counter and wat-counter when clang / wat2wasm exist)
	@mkdir -p $(BUILD)/plugins $(BUILD)/examples
	@for p in $(PLUGINS); do \
		if [ -d plugins/$$p ]; then echo "wasm  plugins/$$p"; $(WASMBUILD) -o $(BUILD)/plugins/$$p.wasm ./plugins/$$p || exit 1; fi; \
	done
	@for e in $(EXAMPLES); do \
		echo "wasm  examples/$$e"; $(WASMBUILD) -ldflags "-X main.version=$(VERSION)" -o $(BUILD)/examples/$$e.wasm ./examples/$$e || exit 1; \
	done
	@if command -v clang >/dev/null 2>&1 && command -v wasm-ld >/dev/null 2>&1; then \
		echo "wasm  examples/c-counter (clang)"; $(CWASM) -o $(BUILD)/examples/c-counter.wasm examples/c-counter/src/counter.c || exit 1; \
	else echo "skip  examples/c-counter: no clang/wasm-ld for wasm32-wasi (make deps)"; fi
	@if command -v wat2wasm >/dev/null 2>&1; then \
		echo "wasm  examples/wat-counter (wat2wasm)"; wat2wasm -o $(BUILD)/examples/wat-counter.wasm examples/wat-counter/counter.wat || exit 1; \
	else echo "skip  examples/wat-counter: no wat2wasm (make deps)"; fi

run: build ## start the host with the default config (edgeshard.toml)
	$(BUILD)/edgeshard serve --config $(CONFIG)

deps: ## install what tests use when missing (PostgreSQL, Chromium; clang, lld, wasi-libc, wabt for the C and WAT examples): apt-get as root, else says what to install
	@scripts/deps.sh

test: plugins deps ## build plugins, install test components if missing, run every test (with -race)
	$(GO) test $(TESTFLAGS) ./...

check: ## gofmt, go vet, go mod tidy; fails on a dirty tree
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(WASMENV) $(GO) vet ./abi/... ./examples/... $(addprefix ./plugins/,$(PLUGINS))
	$(GO) mod tidy
	@git diff --exit-code go.mod go.sum || (echo "go.mod/go.sum not tidy"; exit 1)
	cd bench && $(GO) vet ./... && $(GO) mod tidy
	@git diff --exit-code bench/go.mod bench/go.sum || (echo "bench/go.mod/go.sum not tidy"; exit 1)

# Fuzz targets, as package:Target. Seeds and kept crashers live in each
# package's testdata/fuzz/<Target>/ and also run in `make test`.
FUZZTIME    ?= 20s
FUZZTARGETS := \
	./abi:FuzzDecode \
	./abi:FuzzRoundTrip \
	./host/internal/wasm:FuzzHostFunctions \
	./host/internal/wasm:FuzzLoad \
	./host/internal/wasm/wasmbin:FuzzPreflight \
	./host/config:FuzzParse \
	./storage/snapshot:FuzzReader \
	./storage:FuzzImportShard \
	./host:FuzzDO \
	./edge:FuzzParseEvents

fuzz: ## run every fuzz target for FUZZTIME each (default 20s)
	@for t in $(FUZZTARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz  $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

# Crash test: kill -9 the real host under load, restart, compare SQL with
# the clients' ledger (cmd/edgeshard-crashtest). Defaults take about a
# minute per mode; raise CYCLES, DURATION (longest load stretch before a
# random kill) and CLIENTS for a soak, e.g.
#   make crash-test CYCLES=40 DURATION=10s CLIENTS=32
CYCLES   ?= 5
DURATION ?= 3s
CLIENTS  ?= 8
MODES    ?= primary,counter-shadow,event-shadow

crash-test: ## kill -9 the host under load for CYCLES cycles per mode; fails unless lost=0 duplicated=0
	$(GO) run ./cmd/edgeshard-crashtest -cycles $(CYCLES) -duration $(DURATION) -clients $(CLIENTS) -modes $(MODES)

# The fleet mode (MODES=fleet works too): three hosts with distinct node
# ids on one throwaway PostgreSQL the test starts, clients spread over all
# of them, FLEET_CYCLES kills at random (every fifth kills two hosts at
# once: 15 cycles are 18 kills); about a minute.
FLEET_CYCLES ?= 15

crash-test-fleet: ## 3 hosts, one PostgreSQL, kill -9 at random (FLEET_CYCLES, ≥ 15 kills); fails unless lost=0 duplicated=0
	$(GO) run ./cmd/edgeshard-crashtest -cycles $(FLEET_CYCLES) -duration $(DURATION) -clients $(CLIENTS) -modes fleet

# The cluster mode (MODES=cluster works too): three hosts of ONE POP
# ([cluster]: an etcd the test starts in process, one throwaway
# PostgreSQL), the edge API's load plus per-name page views through random
# hosts; CLUSTER_CYCLES cycles, each one of kill -9 + restart, SIGSTOP past
# the 2 s lease + SIGCONT, SIGTERM (leave) + restart, cluster leave +
# SIGTERM + restart, or a freeze while another host is killed (every
# action once per five cycles); about a minute and a half.
CLUSTER_CYCLES ?= 20

crash-test-cluster: ## 3 hosts of one POP (etcd, PostgreSQL): kill -9, SIGSTOP, leave at random; lost=0 duplicated=0, ownerships never overlap
	$(GO) run ./cmd/edgeshard-crashtest -cycles $(CLUSTER_CYCLES) -duration $(DURATION) -clients $(CLIENTS) -modes cluster

# Benchmarks (cmd/edgeshard-bench, docs/BENCHMARKS.md): every figure is a
# ratio of two sides run alternately in one process on 127.0.0.1. Extra
# driver flags go in BENCHFLAGS, e.g. BENCHFLAGS="-only counters -rounds 7".
BENCHFLAGS ?=

bench: plugins ## run every benchmark figure (full rounds) and rewrite docs/BENCHMARKS.md
	$(GO) run ./cmd/edgeshard-bench -update-docs $(BENCHFLAGS)

bench-quick: plugins ## the same figures, shorter (2–3.5 minutes on 2 cores), then rewrite docs/BENCHMARKS.md
	$(GO) run ./cmd/edgeshard-bench -quick -update-docs $(BENCHFLAGS)

# Peer comparison (bench/, its own module so that the product does not
# depend on gubernator): edgeshard, gubernator and a bare net/http handler,
# each its own process, under one Go load generator, alternating rounds.
# PEERSFLAGS="-rounds 5 -side 8s" for the full run (default: -quick).
PEERSFLAGS ?= -quick

bench-peers: ## edgeshard vs gubernator vs a bare handler (rate limits, RSS), quick by default (< 3 min once built); rewrites its table in docs/BENCHMARKS.md
	cd bench && $(GO) run ./cmd/peers -update-docs $(PEERSFLAGS)

clean: ## remove build outputs
	rm -rf $(BUILD)
