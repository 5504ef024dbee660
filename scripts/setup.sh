#!/usr/bin/env bash
# Install what the project needs into the project folder: .venv (Python) and node_modules.
# Idempotent and quick when nothing changed (stamp files hold the hash of the inputs).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp() { cat "$@" | sha256sum | cut -c1-16; }

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
want=$(stamp pyproject.toml)
if [ "$(cat .venv/.s3convex-stamp 2>/dev/null)" != "$want" ]; then
  echo "==> installing Python dependencies"
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
  echo "$want" > .venv/.s3convex-stamp
fi

want=$(stamp package.json package-lock.json)
if [ "$(cat node_modules/.s3convex-stamp 2>/dev/null)" != "$want" ]; then
  echo "==> installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.s3convex-stamp
fi
