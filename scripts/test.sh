#!/usr/bin/env bash
# The README's test command: the whole suite.
#   1. Convex functions and the local Convex server (vitest, convex-test);
#   2. Python: ruff, the import layers (pyproject.toml [tool.importlinter]), pyright over the
#      shipped packages ([tool.pyright]); then pytest on moto (unit, integration, end-to-end),
#      in parallel;
#   3. the end-to-end tier again on LocalStack.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

echo "==> TypeScript: typecheck + vitest"
npx tsc --noEmit -p convex          # the functions, as Convex compiles them
npx tsc --noEmit                    # the tests and the vitest config
npx tsc --noEmit -p convex_local    # the local Convex server and its bench
npx vitest run

echo "==> Python: ruff"
.venv/bin/ruff check .

echo "==> Python: import layers (import-linter)"
.venv/bin/lint-imports

echo "==> Python: types (pyright)"
.venv/bin/pyright

echo "==> Python on moto"
.venv/bin/python -m pytest -p no:cacheprovider -n 2 --backend=moto "$@"

echo "==> Python end-to-end on LocalStack"
.venv/bin/python -m pytest -p no:cacheprovider -n 2 --backend=localstack -m e2e "$@"
