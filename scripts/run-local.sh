#!/usr/bin/env bash
# The README's run command: install, bring the embedded local stack up, provision, run the daemon.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/local-stack.sh up
eval "$(bash scripts/local-stack.sh env)"
echo "local-stack: the consumer is starting; Ctrl-C stops it (the stack keeps running: scripts/local-stack.sh down)" >&2
exec .venv/bin/s3convex run "$@"
