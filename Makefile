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

## test-short: run the quick tests only
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

## bench: run every benchmark beside its baseline; writes bench/RESULTS.md and bench/results.json
.PHONY: bench
bench:
	@mkdir -p bench
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./... | tee bench/raw.txt
	$(GO) run ./cmd/benchreport -out bench < bench/raw.txt
	@cat bench/RESULTS.md

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
