#!/usr/bin/env bash
# Builds the Lambda zips with cargo-lambda for arm64 (what template.yaml deploys) and x86_64,
# into target/lambda/<arch>/<function>/bootstrap.zip, and prints their sizes: one
# `cargo lambda build` per architecture builds the six binaries together.
#
#   scripts/build-lambdas.sh          # arm64 and x86_64 (make build)
#   scripts/build-lambdas.sh arm64    # only the architectures named (make deploy: the template's)
set -euo pipefail
cd "$(dirname "$0")/.."
archs=("$@")
[ ${#archs[@]} -eq 0 ] && archs=(arm64 x86_64)
for arch in "${archs[@]}"; do
  case "$arch" in
    arm64 | x86_64) ;;
    *) echo "usage: $0 [arm64] [x86_64]   (no argument: both)" >&2; exit 2 ;;
  esac
done
for arch in "${archs[@]}"; do
  flag="--$arch"
  [ "$arch" = "x86_64" ] && flag="--x86-64"
  started=$SECONDS
  cargo lambda build --release --locked "$flag" --output-format zip \
    --lambda-dir "target/lambda/$arch" \
    --bin receiver --bin processor --bin sweeper --bin api --bin notifier --bin windows
  # The build's own time (the deploy build time, for the template's arm64), as make deploy sees it.
  echo "build-lambdas: $arch: six binaries built in $((SECONDS - started)) s" >&2
done
header="| function |" rule="|---|"
for arch in "${archs[@]}"; do header+=" $arch zip |"; rule+="---|"; done
echo "$header"
echo "$rule"
for function in receiver processor sweeper api notifier windows; do
  size() { stat -c %s "target/lambda/$1/$function/bootstrap.zip" | awk '{printf "%.2f MB", $1/1048576}'; }
  row="| $function |"
  for arch in "${archs[@]}"; do row+=" $(size "$arch") |"; done
  echo "$row"
done
