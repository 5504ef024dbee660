#!/usr/bin/env bash
# Stop the LocalStack started by start.sh (same LOCALSTACK_STATE_DIR). Idempotent.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${LOCALSTACK_STATE_DIR:-$ROOT/.localstack/state}
PIDFILE=$STATE/localstack.pid

if [[ ! -f $PIDFILE ]]; then
    echo "localstack: not running (no $PIDFILE)" >&2
    exit 0
fi
pid=$(cat "$PIDFILE")
# Only signal the process we started: a stale pid file may name a recycled pid.
if ! grep -qa "localstack.runtime.main" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "localstack: not running (stale pid file)" >&2
    rm -f "$PIDFILE"
    exit 0
fi
kill -TERM "$pid"
for _ in $(seq 200); do  # up to 20 s for a clean shutdown (shutdown hooks, state)
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    echo "localstack: still running after 20 s, killing $pid" >&2
    kill -KILL "$pid"
fi
rm -f "$PIDFILE"
echo "localstack: stopped" >&2
