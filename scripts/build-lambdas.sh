#!/usr/bin/env bash
# Builds the Lambda zips with cargo-lambda for arm64 (what template.yaml deploys) and x86_64,
# into target/lambda/<arch>/<function>/bootstrap.zip, and prints their sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
for arch in arm64 x86_64; do
  flag="--$arch"
  [ "$arch" = "x86_64" ] && flag="--x86-64"
  cargo lambda build --release --locked "$flag" --output-format zip \
    --lambda-dir "target/lambda/$arch" \
    --bin receiver --bin processor --bin sweeper --bin api --bin notifier --bin windows
done
echo "| function | arm64 zip | x86_64 zip |"
echo "|---|---|---|"
for function in receiver processor sweeper api notifier windows; do
  size() { stat -c %s "target/lambda/$1/$function/bootstrap.zip" | awk '{printf "%.2f MB", $1/1048576}'; }
  echo "| $function | $(size arm64) | $(size x86_64) |"
done
