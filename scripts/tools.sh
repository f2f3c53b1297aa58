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

# ensure_venv DIR SPEC: a venv at DIR holding exactly SPEC (a list of requirements). The spec is
# the cache key: a venv installed with another one (or before the pins) is made anew.
ensure_venv() {
  local dir=$1 spec=$2
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.installed-spec" 2>/dev/null)" != "$spec" ]; then
    echo "tools: installing $spec (PyPI) into $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    # shellcheck disable=SC2086  # the spec is a list of requirements
    "$dir/bin/pip" install --quiet --disable-pip-version-check $spec
    echo "$spec" >"$dir/.installed-spec"
  fi
}

install() { ensure_venv "$venv" "$tools_spec"; }

verifier_venv="${VERIFIER_VENV:-$root/.cache/verifier/venv}"
verifier_spec="standardwebhooks==1.1.0"

verifier() { ensure_venv "$verifier_venv" "$verifier_spec"; }

# The deploy rehearsal's venv (.cache/rehearsal/venv, about 50 s to install): moto in-process
# with the services the template makes, and the SAM translator SAM CLI pins. Not moto's `server`
# extra, which caps aws-sam-translator below the version SAM CLI uses; the emulators' moto
# (scripts/emulators.sh) is the same moto version.
rehearsal_venv="${REHEARSAL_VENV:-$root/.cache/rehearsal/venv}"
rehearsal_spec="moto[cloudformation,apigatewayv2,dynamodbstreams,events]==5.1.22 aws-sam-translator==1.115.0"

rehearsal() { ensure_venv "$rehearsal_venv" "$rehearsal_spec"; }

# The console's browser test (scripts/console-browser.py): selenium driving Debian's chromium
# through chromium-driver (installed with apt when missing: the machine's package manager).
browser_venv="${BROWSER_VENV:-$root/.cache/browser/venv}"
browser_spec="selenium==4.40.0"

browser() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "tools: installing chromium and chromium-driver (apt)" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  ensure_venv "$browser_venv" "$browser_spec"
}

case "${1:-}" in
  install) install ;;
  verifier) verifier ;;
  rehearse)
    shift; [ "${1:-}" = "--" ] && shift
    rehearsal
    AWS_DEFAULT_REGION=us-east-1 "$rehearsal_venv/bin/python" "$root/scripts/deploy-rehearsal.py" "$@"
    ;;
  browser)
    shift; [ "${1:-}" = "--" ] && shift
    browser
    "$browser_venv/bin/python" "$root/scripts/console-browser.py" "$@"
    ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    install
    PATH="$venv/bin:$PATH" SAM_CLI_TELEMETRY=0 "$@"
    ;;
  *) echo "usage: $0 install | verifier | rehearse [-- ARGS] | browser [-- BINARY [SHOTS]] | run -- CMD..." >&2; exit 2 ;;
esac
