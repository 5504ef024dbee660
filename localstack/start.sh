#!/usr/bin/env bash
# Start LocalStack (S3 + SQS) in host mode — no Docker — in the background, on loopback only,
# wait until it is healthy and the project's resources are provisioned, print the endpoint.
#
# Environment (all optional):
#   LOCALSTACK_PORT           gateway port on 127.0.0.1 (4566)
#   LOCALSTACK_STATE_DIR      LocalStack's filesystem root: state, pid file, log (.localstack/state)
#   LOCALSTACK_VENV           LocalStack's own venv, created if missing (.localstack/venv)
#   LOCALSTACK_PYTHON         Python 3.13 to create it with (default: pyenv's 3.13.x)
#   LOCALSTACK_START_TIMEOUT  seconds to wait for health and init hooks (90)
#   S3CONVEX_PROVISION        1: the ready hook runs `python -m s3convex infra up` (default); 0: skip
#   S3CONVEX_PYTHON           the project's Python for that hook (.venv/bin/python, else python3)
#   LOCALSTACK_SWITCH_INTERVAL  LocalStack's GIL switch interval in seconds (0.001; see below)
#   Any LocalStack option (S3_SKIP_SIGNATURE_VALIDATION=0, DEBUG=1, ...) is passed through;
#   the project's settings (S3_BUCKET, SQS_QUEUE_NAME, ...) reach the hook through the
#   environment or the project's .env.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${LOCALSTACK_PORT:-4566}
STATE=$(mkdir -p "${LOCALSTACK_STATE_DIR:-$ROOT/.localstack/state}" && cd "${LOCALSTACK_STATE_DIR:-$ROOT/.localstack/state}" && pwd)
VENV=${LOCALSTACK_VENV:-$ROOT/.localstack/venv}
CATALOG=${LOCALSTACK_CATALOG_DIR:-$ROOT/.localstack/static}
TIMEOUT=${LOCALSTACK_START_TIMEOUT:-90}
PIDFILE=$STATE/localstack.pid
LOG=$STATE/localstack.log
ENDPOINT=http://127.0.0.1:$PORT
REQUIREMENTS=$ROOT/localstack/requirements.txt

log() { echo "localstack: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

find_python() {
    if [[ -n ${LOCALSTACK_PYTHON:-} ]]; then echo "$LOCALSTACK_PYTHON"; return; fi
    local candidate
    if command -v pyenv >/dev/null 2>&1; then
        # The bare python3.13 shim refuses while another version is pyenv's global one.
        for candidate in $(ls -d "$(pyenv root)"/versions/3.13.*/bin/python 2>/dev/null | sort -V -r); do
            echo "$candidate"; return
        done
    fi
    if command -v python3.13 >/dev/null 2>&1 && python3.13 -c '' 2>/dev/null; then
        command -v python3.13; return
    fi
    return 1
}

ensure_venv() {
    # A venv named by the caller is theirs: used as it is. Ours is (re)installed when
    # requirements.txt changed; a lock keeps parallel starts (xdist workers) from racing.
    if [[ -n ${LOCALSTACK_VENV:-} && -x $VENV/bin/python ]]; then return; fi
    local stamp=$VENV/.requirements.sha256 wanted
    wanted=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
    [[ -f $stamp && $(cat "$stamp") == "$wanted" ]] && return
    mkdir -p "$(dirname "$VENV")"
    exec 9>"$VENV.lock"
    flock 9
    if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
        local python started
        python=$(find_python) || { log "no Python 3.13 found (set LOCALSTACK_PYTHON)"; exit 1; }
        started=$(now)
        log "creating $VENV with $python (about a minute)"
        [[ -x $VENV/bin/python ]] || "$python" -m venv "$VENV"
        if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$REQUIREMENTS" \
                >"$VENV.install.log" 2>&1; then
            log "pip install failed; last lines of $VENV.install.log:"
            tail -n 20 "$VENV.install.log" >&2
            exit 1
        fi
        rm -rf "$CATALOG"  # built for the previous versions
        echo "$wanted" >"$stamp"
        log "venv ready in $(since "$started") s"
    fi
    exec 9>&-
}

# On its first request LocalStack indexes every AWS service spec (~4 s on 2 cores) into its
# cache dir, i.e. once per state dir. Its Docker image ships that index prebuilt in static_libs
# ($FILESYSTEM_ROOT/usr/lib/localstack); build it once and link it into every state dir.
# The file name carries LocalStack's and botocore's versions: a mismatch only costs the 4 s.
ensure_catalog() {
    compgen -G "$CATALOG/service-catalog-*.dill" >/dev/null && return
    mkdir -p "$CATALOG"
    exec 9>"$CATALOG.lock"
    flock 9
    FILESYSTEM_ROOT="$CATALOG/.root" OVERRIDE_IN_DOCKER=0 "$VENV/bin/python" - "$CATALOG" <<'PY' ||
import os, sys, tempfile
from localstack.aws.spec import _get_catalog_filename, build_service_index_cache
target = os.path.join(sys.argv[1], _get_catalog_filename())
if not os.path.exists(target):
    fd, partial = tempfile.mkstemp(dir=sys.argv[1], suffix=".partial")
    os.close(fd)
    build_service_index_cache(partial)
    os.chmod(partial, 0o644)
    os.replace(partial, target)
PY
        log "could not prebuild the service catalog; LocalStack will build it on first use"
    rm -rf "$CATALOG/.root"
    exec 9>&-
}

running() { [[ -f $PIDFILE ]] && grep -qa localstack.runtime.main "/proc/$(cat "$PIDFILE")/cmdline" 2>/dev/null; }

# Waits (one process, polling) until s3 and sqs are available — "healthy" — and
# then until the READY init stage has completed (our hooks ran). Prints both times.
# Exit: 0 ready, 1 a hook failed, 2 LocalStack exited, 3 timeout.
wait_ready() {
    "$VENV/bin/python" - "$ENDPOINT" "$(cat "$PIDFILE")" "$TIMEOUT" "$1" <<'PY'
import json, os, sys, time, urllib.request
base, pid, timeout, started = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def get(path):
    with urllib.request.urlopen(base + path, timeout=2) as answer:
        return json.load(answer)
def alive():  # a zombie (exited, not yet reaped by the shell) counts as dead
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
healthy = None
while time.time() - started < timeout:
    if not alive():
        sys.exit(2)
    try:
        if healthy is None:
            services = get("/_localstack/health")["services"]
            if all(services.get(n) in ("available", "running") for n in ("s3", "sqs")):
                healthy = time.time() - started
        if healthy is not None:
            init = get("/_localstack/init")  # START hooks (00-loopback.py) count too
            failed = [s["name"] for s in init["scripts"] if s["state"] == "ERROR"]
            if failed:
                print(f"init hook failed: {' '.join(failed)}", file=sys.stderr)
                sys.exit(1)
            if init["completed"]["READY"]:
                print(f"localstack: healthy in {healthy:.1f} s, init hooks done in "
                      f"{time.time() - started:.1f} s", file=sys.stderr)
                sys.exit(0)
    except OSError:
        pass  # not listening yet
    time.sleep(0.05 if healthy is None else 0.2)  # every poll is a line in LocalStack's log
sys.exit(3)
PY
}

ensure_venv
ensure_catalog
if running; then
    log "already running (pid $(cat "$PIDFILE"))"
    cat "$STATE/localstack.endpoint"
    exit 0
fi

PROVISION=${S3CONVEX_PROVISION:-1}
PROJECT_PYTHON=${S3CONVEX_PYTHON:-}
if [[ -z $PROJECT_PYTHON ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PROJECT_PYTHON=$ROOT/.venv/bin/python; else PROJECT_PYTHON=$(command -v python3 || true); fi
fi
if [[ $PROVISION != 0 ]] && ! PYTHONPATH=$ROOT "$PROJECT_PYTHON" -c 'import infra.provision' 2>/dev/null; then
    log "the project's Python ($PROJECT_PYTHON) cannot import infra.provision:"
    log "set S3CONVEX_PYTHON to the project's venv python, or S3CONVEX_PROVISION=0"
    exit 1
fi

# SO_REUSEADDR as servers use it: connections in TIME_WAIT do not count, a listener does.
if ! "$VENV/bin/python" -c '
import socket, sys
probe = socket.socket()
probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
probe.bind(("127.0.0.1", int(sys.argv[1])))' "$PORT" 2>/dev/null; then
    log "port $PORT on 127.0.0.1 is in use (set LOCALSTACK_PORT)"
    exit 1
fi

# Host mode reads init hooks from $FILESYSTEM_ROOT/etc/localstack/init (localstack/config.py,
# Directories.for_host); link ours there.
mkdir -p "$STATE/etc/localstack" "$STATE/usr/lib"
ln -sfn "$ROOT/localstack/init" "$STATE/etc/localstack/init"
ln -sfn "$CATALOG" "$STATE/usr/lib/localstack"

# LocalStack serves every request on its own thread, under one GIL. A thread that wakes from
# I/O (a socket, the reactor's wake-up pipe, os.urandom for request ids) waits up to the
# interpreter's switch interval (5 ms by default) for a busy thread to let go, at each of the
# many hand-offs one upload makes (PutObject, S3's notification thread, SQS, the consumer's
# HeadObject). Two LocalStacks side by side under the same load (bench/localstack_gil_bench.py:
# 100 uploads/s, a consumer's receives and HEADs), five pairs: 1 ms against 5 ms cut
# PutObject → received p50 by 0–41% (p99 −50…+43%, better in four) and HEAD p50 by 2–54%
# (p99 better in four), for −3…+15% CPU.
# LOCALSTACK_SWITCH_INTERVAL (seconds) sets sys.setswitchinterval before LocalStack starts.
SWITCH_INTERVAL=${LOCALSTACK_SWITCH_INTERVAL:-0.001}
# The command line keeps naming localstack.runtime.main (stop.sh and `running` look for it).
LAUNCH='import runpy, sys; sys.setswitchinterval(float(sys.argv.pop(1))); runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)'

started=$(now)
: >"$LOG"
# DNS_ADDRESS=0: no DNS server on port 53; DISABLE_EVENTS and SKIP_SSL_CERT_DOWNLOAD: no calls
# home (this machine has no internet). PYTHONPATH/VIRTUAL_ENV of the caller must not leak in.
# IN_MEMORY_CLIENT=1: S3 hands its notifications to SQS in-process instead of over HTTP to
# itself, about 16% less emulator CPU per upload (measured at 100 uploads/s).
env -u PYTHONPATH -u VIRTUAL_ENV \
    OVERRIDE_IN_DOCKER=0 \
    FILESYSTEM_ROOT="$STATE" \
    GATEWAY_LISTEN="127.0.0.1:$PORT" \
    LOCALSTACK_HOST="127.0.0.1:$PORT" \
    SERVICES="${SERVICES:-s3,sqs}" \
    SQS_ENDPOINT_STRATEGY="${SQS_ENDPOINT_STRATEGY:-path}" \
    IN_MEMORY_CLIENT="${IN_MEMORY_CLIENT:-1}" \
    DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    S3CONVEX_ROOT="$ROOT" \
    S3CONVEX_PYTHON="$PROJECT_PYTHON" \
    S3CONVEX_PROVISION="$PROVISION" \
    S3CONVEX_ENDPOINT="$ENDPOINT" \
    setsid "$VENV/bin/python" -c "$LAUNCH" "$SWITCH_INTERVAL" >>"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"
echo "$ENDPOINT" >"$STATE/localstack.endpoint"

status=0
wait_ready "$started" || status=$?
case $status in
    0) ;;
    1) log "LocalStack is running (pid $(cat "$PIDFILE")) but an init hook failed; see $LOG:"
       grep -v /_localstack/ "$LOG" | tail -n 20 >&2
       exit 1 ;;
    2) log "exited during start; last lines of $LOG:"
       grep -v /_localstack/ "$LOG" | tail -n 30 >&2
       rm -f "$PIDFILE"
       exit 1 ;;
    *) log "not ready after ${TIMEOUT}s; see $LOG (stop it with localstack/stop.sh)"
       exit 1 ;;
esac
log "running: pid $(cat "$PIDFILE"), log $LOG"
echo "$ENDPOINT"
