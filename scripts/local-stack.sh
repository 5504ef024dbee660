#!/usr/bin/env bash
# The embedded local stack: LocalStack (S3 + SQS, host mode) and the local Convex server,
# both on loopback, with their state under the project folder.
#
#   scripts/local-stack.sh up       start both (idempotent), provision, print the endpoints
#   scripts/local-stack.sh env      print `export ...` lines for the daemon and tools
#   scripts/local-stack.sh status   what is running
#   scripts/local-stack.sh down     stop both; the next `up` starts both empty
#
# One consistent state, never half of one: LocalStack in host mode keeps nothing across a
# restart (persistence is not in LocalStack's community edition), so the local Convex server's
# records (.state/convex-state.json) live exactly as long as the LocalStack process they
# describe. `up` names that process in .state/convex-state.owner (boot id, pid, start time);
# when LocalStack is a new process — after `down`, a crash, a reboot — the Convex server is
# restarted with an empty state. Restarting only the Convex server keeps its records.
#
# Ports: LOCALSTACK_PORT (4566), CONVEX_LOCAL_PORT (3210). Bucket: S3_BUCKET (video-assets).
# State: S3CONVEX_STATE_DIR (.state) and LOCALSTACK_STATE_DIR (.localstack/state), for a second
# stack beside the first (the tests). S3CONVEX_SKIP_SETUP=1: `up` does not run scripts/setup.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STATE=${S3CONVEX_STATE_DIR:-$ROOT/.state}
LOCALSTACK_STATE=${LOCALSTACK_STATE_DIR:-$ROOT/.localstack/state}
export LOCALSTACK_STATE_DIR=$LOCALSTACK_STATE
LOCALSTACK_PORT=${LOCALSTACK_PORT:-4566}
CONVEX_LOCAL_PORT=${CONVEX_LOCAL_PORT:-3210}
CONVEX_PID=$STATE/convex-local.pid
CONVEX_LOG=$STATE/convex-local.log
CONVEX_STATE=$STATE/convex-state.json
CONVEX_STATE_OWNER=$STATE/convex-state.owner
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
    CONVEX_LOCAL_STATE=$CONVEX_STATE NODE_OPTIONS="--max-semi-space-size=64 ${NODE_OPTIONS:-}" \
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

# The running LocalStack process, as "<boot id>:<pid>:<start time>": another value means
# another process, whose S3 and SQS started empty. Nothing when LocalStack is not running.
localstack_instance() {
    local pid
    pid=$(cat "$LOCALSTACK_STATE/localstack.pid" 2>/dev/null) || return 0
    grep -qa localstack.runtime.main "/proc/$pid/cmdline" 2>/dev/null || return 0
    # Field 22 of /proc/PID/stat (after the parenthesised command name): start time in ticks.
    echo "$(cat /proc/sys/kernel/random/boot_id):$pid:$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f20)"
}

# Keep the Convex records only if they were made beside this same LocalStack process.
# $1: the LocalStack process that was running before this `up` (empty: none).
pair_convex_state() {
    local instance
    instance=$(localstack_instance)
    [[ -n $instance ]] || { log "LocalStack is not running"; exit 1; }
    if [[ $(cat "$CONVEX_STATE_OWNER" 2>/dev/null) == "$instance" ]]; then return; fi
    if [[ ! -e $CONVEX_STATE_OWNER && $1 == "$instance" ]] && convex_running; then
        # Both already running from before owners were recorded: adopt them, as `up` always did.
        echo "$instance" > "$CONVEX_STATE_OWNER"
        return
    fi
    if [[ -e $CONVEX_STATE ]] || convex_running; then
        log "LocalStack started empty: starting the local Convex server empty too"
    fi
    stop_convex
    rm -f "$CONVEX_STATE"
    echo "$instance" > "$CONVEX_STATE_OWNER"
}

case ${1:-} in
    up)
        [[ ${S3CONVEX_SKIP_SETUP:-0} == 1 ]] || bash scripts/setup.sh
        eval "$(print_env)"
        before=$(localstack_instance)
        LOCALSTACK_PORT=$LOCALSTACK_PORT S3CONVEX_PYTHON=$ROOT/.venv/bin/python bash localstack/start.sh >/dev/null
        pair_convex_state "$before"
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
        bash localstack/stop.sh || true
        ;;
    *) echo "usage: $0 up|env|status|down" >&2; exit 2 ;;
esac
