#!/usr/bin/env bash
# Deployment tools from PyPI, installed once into .cache/tools/venv (no Docker, no AWS account):
# AWS SAM CLI and cfn-lint (template validation, offline) and cargo-lambda with zig (builds for
# Lambda's arm64 and x86_64). And, in a venv of its own (.cache/verifier/venv, a few seconds to
# install), the reference Standard Webhooks verifier (`standardwebhooks` on PyPI) that the tests use
# as an independent check of the signatures wati-ingest puts on forwarded changes
# (tests/local/forward.rs); `make test` installs it before the tests.
#
#   scripts/tools.sh install          # install only
#   scripts/tools.sh run -- CMD ...   # run CMD with the tools on PATH
#   scripts/tools.sh verifier         # install only the signature verifier's venv
#   scripts/tools.sh rehearse         # the deploy rehearsal (scripts/deploy-rehearsal.py) in its venv
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TOOLS_VENV:-$root/.cache/tools/venv}"

# Exact versions: SAM CLI, cfn-lint, zig and cargo-lambda build and check what users deploy, so a
# new release of any of them changes a deployment only when this line does. aws-sam-translator
# is the one SAM CLI 1.170.0 requires; it is named so that the deploy rehearsal
# (scripts/deploy-rehearsal.py) translates with the same version. The spec is the cache key: a
# venv installed with another spec (or before the pins) is reinstalled.
tools_spec="aws-sam-cli==1.170.0 aws-sam-translator==1.115.0 cfn-lint==1.58.0 cargo-lambda==1.9.2 ziglang==0.17.1"

install() {
  if [ ! -x "$venv/bin/sam" ] || [ ! -x "$venv/bin/cfn-lint" ] || [ ! -x "$venv/bin/cargo-lambda" ] \
    || [ "$(cat "$venv/.installed-spec" 2>/dev/null)" != "$tools_spec" ]; then
    echo "tools: installing $tools_spec (PyPI)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086  # the spec is a list of requirements
    "$venv/bin/pip" install --quiet --disable-pip-version-check $tools_spec
    echo "$tools_spec" >"$venv/.installed-spec"
  fi
}

verifier_venv="${VERIFIER_VENV:-$root/.cache/verifier/venv}"
verifier_spec="standardwebhooks==1.1.0"

verifier() {
  if ! "$verifier_venv/bin/python" -c 'import standardwebhooks' 2>/dev/null \
    || [ "$(cat "$verifier_venv/.installed-spec" 2>/dev/null)" != "$verifier_spec" ]; then
    echo "tools: installing $verifier_spec (PyPI) into $verifier_venv" >&2
    rm -rf "$verifier_venv"
    python3 -m venv "$verifier_venv"
    "$verifier_venv/bin/pip" install --quiet --disable-pip-version-check "$verifier_spec"
    echo "$verifier_spec" >"$verifier_venv/.installed-spec"
  fi
}

# The deploy rehearsal's venv (.cache/rehearsal/venv, about 50 s to install): moto in-process
# with the services the template makes, and the SAM translator SAM CLI pins. Not moto's `server`
# extra, which caps aws-sam-translator below the version SAM CLI uses; the emulators' moto
# (scripts/emulators.sh) is the same moto version.
rehearsal_venv="${REHEARSAL_VENV:-$root/.cache/rehearsal/venv}"
rehearsal_spec="moto[cloudformation,apigatewayv2,dynamodbstreams,events]==5.1.22 aws-sam-translator==1.115.0"

rehearsal() {
  if [ ! -x "$rehearsal_venv/bin/python" ] \
    || [ "$(cat "$rehearsal_venv/.installed-spec" 2>/dev/null)" != "$rehearsal_spec" ]; then
    echo "tools: installing $rehearsal_spec (PyPI) into $rehearsal_venv" >&2
    rm -rf "$rehearsal_venv"
    python3 -m venv "$rehearsal_venv"
    # shellcheck disable=SC2086  # the spec is a list of requirements
    "$rehearsal_venv/bin/pip" install --quiet --disable-pip-version-check $rehearsal_spec
    echo "$rehearsal_spec" >"$rehearsal_venv/.installed-spec"
  fi
}

case "${1:-}" in
  install) install ;;
  verifier) verifier ;;
  rehearse)
    shift; [ "${1:-}" = "--" ] && shift
    rehearsal
    AWS_DEFAULT_REGION=us-east-1 "$rehearsal_venv/bin/python" "$root/scripts/deploy-rehearsal.py" "$@"
    ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    install
    PATH="$venv/bin:$PATH" SAM_CLI_TELEMETRY=0 "$@"
    ;;
  *) echo "usage: $0 install | verifier | rehearse [-- ARGS] | run -- CMD..." >&2; exit 2 ;;
esac
