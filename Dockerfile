# syntax=docker/dockerfile:1
# The s3convex image: `s3convex run` (the daemon) by default, `s3convex bridge` for the MinIO bridge.
#   docker build -t s3convex:0.1.0 .
# The base is pinned by tag: the Python the lock is tested with. Pin the digest as well where a
# registry is reachable (`docker buildx imagetools inspect python:3.11.7-slim-bookworm`), as
#   --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# 1. A wheel of every package of the lock, at its exact version, each download checked against
#    the lock's hashes (the lock also holds the test tools of its `test` extra, and pip).
COPY requirements.lock .
RUN pip wheel --no-cache-dir --require-hashes --no-deps -r requirements.lock --wheel-dir /wheels
# 2. The project into a venv without pip, resolved offline from those wheels only: pip's
#    resolver takes what s3convex's dependencies need and nothing else, so no test tool and no
#    unpinned package gets in (the build backend, setuptools, is the lock's too).
COPY pyproject.toml README.md ./
COPY src src
COPY consumer consumer
COPY handlers handlers
COPY infra infra
RUN python -m venv --without-pip /opt/s3convex \
    && pip --python /opt/s3convex/bin/python install --no-cache-dir --no-index \
       --find-links /wheels /src

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="s3convex" \
      org.opencontainers.image.description="S3 objects and their Convex asset records, kept in sync"
# A fixed numeric user: Kubernetes' runAsNonRoot can only verify a numeric one (infra/k8s runs
# as 10001). No home directory: nothing is written outside /tmp.
RUN groupadd --system --gid 10001 s3convex \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin s3convex
COPY --from=build /opt/s3convex /opt/s3convex
ENV PATH=/opt/s3convex/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
# HEALTH_PORT (the daemon's probes and metrics) and BRIDGE_PORT, as infra/k8s sets them.
EXPOSE 8080 8088
ENTRYPOINT ["s3convex"]
CMD ["run"]
