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
# Dependencies come from requirements.lock: exact versions with hashes (pyproject.toml holds the
# ranges; `make lock` regenerates the lock). The lock also pins pip itself. The project goes in on
# top, without dependencies.
# Editable "strict" mode links every module of the packages into build/__editable__.*, which is
# what pyright and import-linter read; a new or removed module needs a reinstall, so the stamp
# covers the list of package files as well as pyproject.toml and the lock.
want=$( { cat pyproject.toml requirements.lock; find src consumer handlers infra -name '*.py' | sort; } | sha256sum | cut -c1-16)
if [ "$(cat .venv/.s3convex-stamp 2>/dev/null)" != "$want" ]; then
  echo "==> installing Python dependencies"
  .venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
  rm -rf build/__editable__.*
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps \
    --config-settings editable_mode=strict -e .
  echo "$want" > .venv/.s3convex-stamp
fi

# promtool (Debian's prometheus package) tests infra/alerts against synthetic series.
if ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing promtool (Debian: prometheus)"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null; }
fi

want=$(stamp package.json package-lock.json)
if [ "$(cat node_modules/.s3convex-stamp 2>/dev/null)" != "$want" ]; then
  echo "==> installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.s3convex-stamp
fi
