# Ephemera — run `make help` for the targets.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin/ephemera
GO      ?= go

.DEFAULT_GOAL := help

## help: list the targets
.PHONY: help
help:
	@awk -F': ' '/^## /{ sub(/^## /, ""); printf "  %-15s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

## build: build bin/ephemera with the version from git
.PHONY: build
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/ephemera

## test: run every test with the race detector
.PHONY: test
test:
	$(GO) test -race -count=1 -timeout 20m ./...

## test-short: a quick check of every package (no race detector; the slow multi-process, browser and large simulated tests skipped; about 45 s on 2 cores once built)
.PHONY: test-short
test-short:
	$(GO) test -short -count=1 ./...

## lint: go vet and a gofmt check
.PHONY: lint
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## fmt: format the code
.PHONY: fmt
fmt:
	gofmt -w $$(git ls-files '*.go')

## bench: run every benchmark beside its raw baseline, and the CI-sized simulation; writes bench/RESULTS.md and bench/results.json
.PHONY: bench
bench:
	@mkdir -p bench
	@# -p 1: one package's benchmarks at a time, so that none measures another's load
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 2s -count 1 ./... | tee bench/raw.txt
	$(GO) test -run '^TestSimulation$$' -count=1 -timeout 30m -v ./testnet/sim -args -sim.size=ci -sim.bench=$(CURDIR)/bench/sim-ci.txt
	$(MAKE) --no-print-directory bench-report

# bench-report: rebuild the report from the last runs' raw figures
.PHONY: bench-report
bench-report:
	cat bench/raw.txt $(wildcard bench/sim-ci.txt bench/sim-mid.txt bench/sim.txt bench/sim-huge.txt bench/netns.txt bench/attack.txt) | $(GO) run ./cmd/benchreport -out bench
	@cat bench/RESULTS.md

## sim: the full simulation, 503 nodes on the mem transport for 10 simulated minutes (about an hour on 2 cores; SIM_ARGS=-sim.budget=30m stops the load early); its figures go into the report
.PHONY: sim
sim:
	@mkdir -p bench
	@# every core: at this size the collector's marking gains more from them than the bubble's lock costs (see oneProcessor)
	GOMAXPROCS=$$(nproc) $(GO) test -run '^TestSimulation$$' -count=1 -timeout 12h -v ./testnet/sim -args -sim.size=full -sim.bench=$(CURDIR)/bench/sim.txt -sim.out=$(CURDIR)/bench/sim.json $(SIM_ARGS)
	$(MAKE) --no-print-directory bench-report

## sim-huge: 1,000 nodes on the mem transport (Noise and yamux on simulated links), 2 simulated minutes after the fill (about 95 minutes on 2 cores and 24 GiB, a third of it joining); a budget counts from the start, so SIM_ARGS=-sim.budget=… under that cuts the load; its figures go into the report
.PHONY: sim-huge
sim-huge:
	@mkdir -p bench
	GOMAXPROCS=$$(nproc) $(GO) test -run '^TestSimulation$$' -count=1 -timeout 12h -v ./testnet/sim -args -sim.size=huge -sim.bench=$(CURDIR)/bench/sim-huge.txt -sim.out=$(CURDIR)/bench/sim-huge.json $(SIM_ARGS)
	$(MAKE) --no-print-directory bench-report

## sim-mid: the 200-node simulation, 2 simulated minutes after the fill (about 8 minutes); its figures go into the report
.PHONY: sim-mid
sim-mid:
	@mkdir -p bench
	$(GO) test -run '^TestSimulation$$' -count=1 -timeout 3h -v ./testnet/sim -args -sim.size=mid -sim.bench=$(CURDIR)/bench/sim-mid.txt -sim.out=$(CURDIR)/bench/sim-mid.json $(SIM_ARGS)
	$(MAKE) --no-print-directory bench-report

## sim-ci: the CI-sized simulation (88 nodes) and the partition test, without the race detector
.PHONY: sim-ci
sim-ci:
	$(GO) test -run '^(TestSimulation|TestPartition)$$' -count=1 -timeout 30m -v ./testnet/sim

## testnet-netns: the join testbed (root): real nodes in network namespaces, some behind cone and symmetric NATs, joining with init --join; checks the goals and writes bench/netns.txt (about 2 minutes)
.PHONY: testnet-netns
testnet-netns: build
	@mkdir -p bench
	$(GO) run ./cmd/netbed --binary $(BIN) --bench $(CURDIR)/bench/netns.txt
	$(GO) run ./cmd/benchreport -out bench -merge < bench/netns.txt

## attack: every attack of the suite, each against its own local testnet of real processes, with the bounds the network must hold; writes bench/attack.txt into the report (ATTACK_ARGS=--only hoarding runs one)
.PHONY: attack
attack:
	@mkdir -p bench
	$(GO) run ./cmd/attack --bench $(CURDIR)/bench/attack.txt $(ATTACK_ARGS)
	$(GO) run ./cmd/benchreport -out bench -merge < bench/attack.txt

## chaos: kill -9 random nodes of a real local testnet during sessions and restart them; then split a simulated network in two for a minute and heal it; check grants, releases and re-convergence
.PHONY: chaos
chaos:
	$(GO) run ./cmd/chaos --cycles 10
	$(GO) test -run '^TestPartition$$' -count=1 -timeout 30m -v ./testnet/sim

## testnet: start a local testnet (1 bootstrap, 3 oracles, 5 miners, 1 router) until Ctrl-C
.PHONY: testnet
testnet:
	./testnet/run.sh

## testnet-check: start the local testnet, check health and one miner's whole lifecycle, stop it
.PHONY: testnet-check
testnet-check:
	./testnet/run.sh --check

## proto: regenerate protocol/pb from ephemera.proto (needs protoc and protoc-gen-go)
.PHONY: proto
proto:
	cd protocol/pb && protoc --go_out=. --go_opt=paths=source_relative ephemera.proto

## clean: remove build output
.PHONY: clean
clean:
	rm -rf bin
