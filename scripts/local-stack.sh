#!/usr/bin/env bash
# The embedded local stack: LocalStack (S3 + SQS, host mode) and the local Convex server,
# both on loopback, with their state under the project folder.
#
#   scripts/local-stack.sh up       start both (idempotent), provision, print the endpoints
#   scripts/local-stack.sh env      print `export ...` lines for the daemon and tools
#   scripts/local-stack.sh status   what is running
#   scripts/local-stack.sh down     stop both (state is kept; rm -r .localstack .state to wipe)
#
# Ports: LOCALSTACK_PORT (4566), CONVEX_LOCAL_PORT (3210). Bucket: S3_BUCKET (video-assets).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STATE=$ROOT/.state
LOCALSTACK_PORT=${LOCALSTACK_PORT:-4566}
CONVEX_LOCAL_PORT=${CONVEX_LOCAL_PORT:-3210}
CONVEX_PID=$STATE/convex-local.pid
CONVEX_LOG=$STATE/convex-local.log
KEY_FILE=$STATE/convex-admin-key

log() { echo "local-stack: $*" >&2; }

admin_key() {
    mkdir -p "$STATE"
    if [[ ! -s $KEY_FILE ]]; then
        (umask 077; echo "local-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" > "$KEY_FILE")
    fi
    cat "$KEY_FILE"
}

print_env() {
    cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$LOCALSTACK_PORT
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export S3_BUCKET=${S3_BUCKET:-video-assets}
export SQS_QUEUE_NAME=${SQS_QUEUE_NAME:-s3convex-events}
export SQS_DLQ_NAME=${SQS_DLQ_NAME:-s3convex-events-dlq}
export CONVEX_URL=http://127.0.0.1:$CONVEX_LOCAL_PORT
export CONVEX_DEPLOY_KEY=$(admin_key)
ENV
}

convex_running() { [[ -f $CONVEX_PID ]] && kill -0 "$(cat "$CONVEX_PID")" 2>/dev/null; }

start_convex() {
    if convex_running; then
        log "local Convex server already running (pid $(cat "$CONVEX_PID"))"
        return
    fi
    log "starting the local Convex server on 127.0.0.1:$CONVEX_LOCAL_PORT"
    : > "$CONVEX_LOG"
    CONVEX_LOCAL_PORT=$CONVEX_LOCAL_PORT CONVEX_LOCAL_ADMIN_KEY=$(admin_key) \
    CONVEX_LOCAL_STATE=$STATE/convex-state.json \
        setsid node_modules/.bin/tsx convex_local/server.ts >>"$CONVEX_LOG" 2>&1 < /dev/null &
    echo $! > "$CONVEX_PID"
    for _ in $(seq 1 300); do
        if grep -q '"event":"listening"' "$CONVEX_LOG" 2>/dev/null; then return; fi
        if ! convex_running; then log "the local Convex server exited:"; tail -20 "$CONVEX_LOG" >&2; exit 1; fi
        sleep 0.1
    done
    log "the local Convex server did not start in 30 s:"; tail -20 "$CONVEX_LOG" >&2; exit 1
}

stop_convex() {
    if convex_running; then
        kill "$(cat "$CONVEX_PID")"
        for _ in $(seq 1 50); do convex_running || break; sleep 0.1; done
        log "local Convex server stopped"
    fi
    rm -f "$CONVEX_PID"
}

case ${1:-} in
    up)
        bash scripts/setup.sh
        eval "$(print_env)"
        LOCALSTACK_PORT=$LOCALSTACK_PORT S3CONVEX_PYTHON=$ROOT/.venv/bin/python bash localstack/start.sh >/dev/null
        start_convex
        .venv/bin/s3convex infra up
        log "S3 + SQS: $AWS_ENDPOINT_URL   Convex: $CONVEX_URL   bucket: $S3_BUCKET"
        ;;
    env) print_env ;;
    status)
        curl -fsS "http://127.0.0.1:$LOCALSTACK_PORT/_localstack/health" >/dev/null 2>&1 \
            && log "LocalStack: up on $LOCALSTACK_PORT" || log "LocalStack: down"
        convex_running && log "Convex: up on $CONVEX_LOCAL_PORT (pid $(cat "$CONVEX_PID"))" || log "Convex: down"
        ;;
    down)
        stop_convex
        LOCALSTACK_PORT=$LOCALSTACK_PORT bash localstack/stop.sh || true
        ;;
    *) echo "usage: $0 up|env|status|down" >&2; exit 2 ;;
esac
