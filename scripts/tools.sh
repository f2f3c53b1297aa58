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
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TOOLS_VENV:-$root/.cache/tools/venv}"

install() {
  if [ ! -x "$venv/bin/sam" ] || [ ! -x "$venv/bin/cfn-lint" ] || [ ! -x "$venv/bin/cargo-lambda" ]; then
    echo "tools: installing aws-sam-cli, cfn-lint, cargo-lambda and ziglang (PyPI)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      aws-sam-cli cfn-lint "cargo-lambda==1.9.*" ziglang
  fi
}

verifier_venv="${VERIFIER_VENV:-$root/.cache/verifier/venv}"

verifier() {
  if ! "$verifier_venv/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
    echo "tools: installing standardwebhooks 1.1.0 (PyPI) into $verifier_venv" >&2
    rm -rf "$verifier_venv"
    python3 -m venv "$verifier_venv"
    "$verifier_venv/bin/pip" install --quiet --disable-pip-version-check "standardwebhooks==1.1.0"
  fi
}

case "${1:-}" in
  install) install ;;
  verifier) verifier ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    install
    PATH="$venv/bin:$PATH" SAM_CLI_TELEMETRY=0 "$@"
    ;;
  *) echo "usage: $0 install | verifier | run -- CMD..." >&2; exit 2 ;;
esac
