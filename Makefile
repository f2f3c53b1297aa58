# wati-ingest: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PORT ?= 3000
DATA_DIR ?= ./.wati-ingest

.PHONY: run demo load load-aws test lint unit emulators build clean

## run: build and start the whole pipeline locally (receiver, queue, processor, read API)
run:
	PORT=$(PORT) DATA_DIR=$(DATA_DIR) $(CARGO) run --release --locked --bin wati-ingest

## demo: post a sample of every Wati event type to the running server, then read the state back
demo:
	PORT=$(PORT) DATA_DIR=$(DATA_DIR) bash scripts/demo.sh

## load: accepted webhooks per second and accept latency on the local server
load:
	$(CARGO) bench --locked --bench load_local

## load-aws: the AWS path on the emulators: receiver rate, overhead over the bare calls, processor rate
load-aws:
	scripts/emulators.sh run -- $(CARGO) bench --locked --bench load_aws

## test: formatting, lints, then every test (unit, property, HTTP, restart, and the contract
## suite on both backends: the emulators are downloaded once into .cache/ and stopped afterwards)
test: lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit:
	scripts/emulators.sh run -- $(CARGO) test --locked

## emulators: download DynamoDB Local and moto's SQS server into .cache/ (make test does this too)
emulators:
	scripts/emulators.sh install

build:
	$(CARGO) build --release --locked

clean:
	$(CARGO) clean
	rm -rf $(DATA_DIR)
