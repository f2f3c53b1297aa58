# wati-ingest: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PORT ?= 3000
DATA_DIR ?= ./.wati-ingest

.PHONY: run demo load load-aws chaos test lint validate unit emulators build deploy clean

## run: build and start the whole pipeline locally (receiver, queue, processor, read API)
run:
	PORT=$(PORT) DATA_DIR=$(DATA_DIR) $(CARGO) run --profile local --locked --bin wati-ingest

## demo: post a sample of every Wati event type to the running server, then read the state and
## the changes it announced back
demo:
	PORT=$(PORT) DATA_DIR=$(DATA_DIR) bash scripts/demo.sh

## smoke: post a sample of each kind of callback and read the state (and the change) back,
## each hop timed and explained; by default against `make run` (its DATA_DIR's secret and token),
## or a deployment: export SMOKE_WEBHOOK_URL (the webhook URL with its secret), SMOKE_API_URL
## (ReadApiUrl) and API_TOKEN first. Secrets go through the environment and files only, never a
## command line (other users see those in the process list).
.PHONY: smoke
smoke:
	@SMOKE_WEBHOOK_URL="$${SMOKE_WEBHOOK_URL:-http://127.0.0.1:$(PORT)/webhook/$$(cat $(DATA_DIR)/webhook_secret 2>/dev/null)}" \
	  SMOKE_API_URL="$${SMOKE_API_URL:-http://127.0.0.1:$(PORT)}" \
	  API_TOKEN="$${API_TOKEN:-$$(cat $(DATA_DIR)/api_token 2>/dev/null)}" \
	  $(CARGO) run --quiet --profile local --locked --bin wati-ingest -- smoke

## load: accepted webhooks per second and accept latency on the local server
load:
	$(CARGO) bench --locked --bench load_local

## load-aws: the AWS path on the emulators: receiver rate, overhead over the bare calls, processor rate
load-aws:
	scripts/emulators.sh run -- $(CARGO) bench --locked --bench load_aws

## bench: criterion in-process benches, load at concurrency 16 and 64, the broadcast replay,
## load-aws (and its broadcast profile) and Lambda cold start on the emulators; writes every
## figure to docs/performance.md
.PHONY: bench
bench:
	CARGO=$(CARGO) bash scripts/bench.sh

## broadcast: a broadcast replayed as Wati would post it (benches/broadcast.rs): BROADCAST_CONTACTS
## (50,000) contacts' callbacks, v1 + v2, to the local server at BROADCAST_RATE (2,000/s): accept
## p99, apply lag p99, time to drain; then BROADCAST_AWS_CONTACTS (150) through the AWS receiver
## and processor on the emulators: processor events/s (the receiver's metric lines not shown)
BROADCAST_AWS_CONTACTS ?= 150
.PHONY: broadcast
broadcast:
	$(CARGO) bench --locked --bench broadcast
	set -o pipefail; LOAD_PROFILE=broadcast BROADCAST_CONTACTS=$(BROADCAST_AWS_CONTACTS) \
	  scripts/emulators.sh run -- $(CARGO) bench --locked --bench load_aws | { grep -v '^{' || true; }

## contact-reads: a contact with 20,000 messages (CONTACT_READS_MESSAGES) against one with one
## message (issue 18 §2): read p50/p99 and the ratio of the p50s on SQLite, then on DynamoDB Local
## (as much of the history as loads in CONTACT_READS_AWS_LOAD_SECONDS, 120) with the items read
## per contact read (benches/contact_reads.rs)
.PHONY: contact-reads
contact-reads:
	scripts/emulators.sh run -- $(CARGO) bench --locked --bench contact_reads

## chaos: the chaos + fault-injection test at a large size on both backends (make test runs a
## CI-sized one); figures in target/chaos/*.json. CHAOS_CONTACTS, CHAOS_AWS_CONTACTS, CHAOS_SEED.
CHAOS_CONTACTS ?= 2000
CHAOS_AWS_CONTACTS ?= 150
chaos:
	CHAOS_CONTACTS=$(CHAOS_CONTACTS) CHAOS_AWS_CONTACTS=$(CHAOS_AWS_CONTACTS) \
	  scripts/emulators.sh run -- $(CARGO) test --locked --test contract chaos:: \
	  -- --nocapture --test-threads=1

## fuzz: cargo-fuzz on the event parser, the webhook router and the Lambda entry points,
## FUZZ_SECONDS (60) each; prints execs, exec/s, corpus and crashes per target (see scripts/fuzz.sh)
.PHONY: fuzz
fuzz:
	CARGO=$(CARGO) bash scripts/fuzz.sh

## test: formatting, lints, template validation, every test (unit, property, HTTP, restart, the
## contract suite on both backends and the end-to-end AWS tests: the emulators are downloaded once
## into .cache/ and stopped afterwards; the Standard Webhooks reference verifier the forwarding
## tests check signatures with goes into .cache/verifier/), then the Lambda builds
test: lint validate unit browser build

## validate: sam validate (SAM and --lint) and cfn-lint on template.yaml, offline, then the
## deploy rehearsal and the checks of what `make deploy` deploys
validate:
	scripts/tools.sh run -- sam validate --region us-east-1 -t template.yaml
	scripts/tools.sh run -- sam validate --lint --region us-east-1 -t template.yaml
	scripts/tools.sh run -- cfn-lint template.yaml
	$(MAKE) --no-print-directory rehearse
	$(MAKE) --no-print-directory check-deploy

## rehearse: template.yaml deployed offline on moto's CloudFormation, with the defaults and with
## every option on: CREATE_COMPLETE, every output, each function's environment naming this
## stack's tables, queue, bus and secret (and holding no secret's value), the Secrets Manager
## secret's value and who may read it, and the template checks (scripts/deploy-rehearsal.py)
.PHONY: rehearse
rehearse:
	scripts/tools.sh rehearse

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit:
	scripts/tools.sh verifier
	scripts/emulators.sh run -- $(CARGO) test --locked

## browser: the console in a headless Chromium (scripts/console-browser.py: sign-in, a search
## from the keyboard, statuses, a failure explained, local times, a phone-width screen, a
## quarantined <script> shown as text, no token in any URL); chromium and chromium-driver are
## installed with apt when missing, selenium into .cache/browser/. SHOTS=DIR saves each view.
SHOTS ?=
browser:
	$(CARGO) build --locked --bin wati-ingest
	scripts/tools.sh browser -- target/debug/wati-ingest $(SHOTS)

## screenshots: the console's views into docs/screenshots/ (shown in the README)
screenshots:
	$(MAKE) --no-print-directory browser SHOTS=docs/screenshots

## emulators: download DynamoDB Local and moto's SQS + EventBridge server into .cache/ (make test does this too)
emulators:
	scripts/emulators.sh install

## build: the Lambda zips (arm64 and x86_64) with cargo-lambda, and their sizes
build:
	scripts/tools.sh run -- scripts/build-lambdas.sh

## deploy: the zips of one build, deployed: one cargo-lambda build of the six functions for the
## template's architecture (arm64), target/deploy/template.json = template.yaml with each
## function's CodeUri its zip (scripts/deploy-template.py), then a guided SAM deploy of that
## template (needs AWS credentials; the questions and what to answer: docs/runbook.md, "Deploy
## and connect Wati"). SAM_DEPLOY_ARGS: more `sam deploy` options (e.g. --profile NAME).
DEPLOY_TEMPLATE := target/deploy/template.json
SAM_DEPLOY_ARGS ?=
deploy:
	architectures="$$(scripts/tools.sh run -- scripts/deploy-template.py --architectures)" && \
	  scripts/tools.sh run -- scripts/build-lambdas.sh $$architectures
	scripts/tools.sh run -- scripts/deploy-template.py --out $(DEPLOY_TEMPLATE)
	scripts/tools.sh run -- sam deploy --guided --template-file $(DEPLOY_TEMPLATE) $(SAM_DEPLOY_ARGS)

## deploy-sam: the alternative: sam build (its rust-cargolambda builder: one cargo-lambda release
## build per function, six in all) and a guided deploy of .aws-sam/build/template.yaml
.PHONY: deploy-sam
deploy-sam:
	scripts/tools.sh run -- sam build --beta-features
	scripts/tools.sh run -- sam deploy --guided $(SAM_DEPLOY_ARGS)

## check-deploy: what `make deploy` deploys, checked offline with dummy zips: the derived
## template's CodeUris and its equality with template.yaml, sam validate --lint and cfn-lint on
## it, and the guided deploy, in-process with SAM CLI, against the runbook's transcript
## (scripts/check-deploy-template.py; part of `make validate`)
.PHONY: check-deploy
check-deploy:
	scripts/tools.sh run -- scripts/check-deploy-template.py

clean:
	$(CARGO) clean
	rm -rf $(DATA_DIR)
