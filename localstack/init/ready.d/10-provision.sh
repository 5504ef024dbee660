#!/usr/bin/env bash
# LocalStack runs this when it is ready (start.sh links localstack/init to where host mode
# looks for hooks). It provisions the project's bucket, queues and notification with the
# project's own code and Python — the same `infra up` that provisions real AWS.
set -euo pipefail

if [[ ${S3CONVEX_PROVISION:-1} == 0 ]]; then
    echo "s3convex: provisioning skipped (S3CONVEX_PROVISION=0)"
    exit 0
fi
: "${S3CONVEX_ROOT:?set by start.sh}" "${S3CONVEX_PYTHON:?set by start.sh}" "${S3CONVEX_ENDPOINT:?set by start.sh}"

cd "$S3CONVEX_ROOT"  # where the project's .env is read from
# LocalStack derives the account from the access key: "test" gives 000000000000, always.
exec env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
    AWS_ENDPOINT_URL="$S3CONVEX_ENDPOINT" \
    AWS_ACCESS_KEY_ID=test \
    AWS_SECRET_ACCESS_KEY=test \
    "$S3CONVEX_PYTHON" -m s3convex infra up
