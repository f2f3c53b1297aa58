#!/usr/bin/env bash
# Deployment tools from PyPI, installed once into .cache/tools/venv (no Docker, no AWS account):
# AWS SAM CLI and cfn-lint (template validation, offline) and cargo-lambda with zig (builds for
# Lambda's arm64 and x86_64).
#
#   scripts/tools.sh install          # install only
#   scripts/tools.sh run -- CMD ...   # run CMD with the tools on PATH
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

case "${1:-}" in
  install) install ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    install
    PATH="$venv/bin:$PATH" SAM_CLI_TELEMETRY=0 "$@"
    ;;
  *) echo "usage: $0 install | run -- CMD..." >&2; exit 2 ;;
esac
