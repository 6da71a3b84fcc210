#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs every check:
# ruff (lint + format), the front-end unit tests, and pytest (engine, kernels, browser).
# Usage: bash .ci/test.sh        (the README's test command; .ci/run calls exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

echo "== system packages (Debian chromium for the browser tests)"
if [ ! -x /usr/bin/chromium ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

echo "== Python packages"
python -m pip install -q --disable-pip-version-check -e ".[test]"

if [ -f .ci/kernels.sh ]; then
  echo "== extra kernels (ipykernel 6 beside 7)"
  bash .ci/kernels.sh
fi

echo "== front end (npm ci, node --test, tsc --checkJs, committed bundle == fresh build)"
(cd js && npm ci --no-audit --no-fund --loglevel=error && npm test && npm run check-types \
  && npm run check-build)

echo "== ruff"
ruff check .
ruff format --check .

echo "== import layers (lint-imports: contracts in pyproject.toml)"
lint-imports

echo "== types (mypy --strict on the package: settings in pyproject.toml)"
mypy

echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
