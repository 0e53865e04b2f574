# syntax=docker/dockerfile:1
# aqueue's image: `aqueue serve`, running the roles AQUEUE_ROLES names (all four when unset).
#
#   docker build -t aqueue:0.1.0 .
#   docker run -e DATABASE_URL=postgresql://user:password@host:5432/db \
#              -e AQUEUE_ROLES=api -p 8000:8000 aqueue:0.1.0
#   docker run ... aqueue:0.1.0 migrate        # any other aqueue command
#
# Without DATABASE_URL it starts the embedded PostgreSQL in /home/aqueue/.aqueue: a demo,
# gone with the container. Give roles through AQUEUE_ROLES, not --roles: the HEALTHCHECK
# reads it to know which port answers /healthz (the API's, AQUEUE_PORT, 8000; else the
# metrics port of a worker or scheduler, AQUEUE_METRICS_PORT; a process with neither has
# nothing to probe and counts as healthy while it runs).
#
# Reproducible: every Python package, the build backend included, is the version
# constraints.txt pins (written by scripts/lock); the base image is pinned by version. To
# pin it by digest as well: docker buildx imagetools inspect python:3.11.14-slim-bookworm
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: aqueue's wheel and a wheel of each runtime dependency ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY constraints.txt ./
RUN pip install --constraint constraints.txt "setuptools>=68" wheel
COPY pyproject.toml README.md ./
COPY sql ./sql
COPY aqueue ./aqueue
# Dependencies as published wheels only (--only-binary): every one has a wheel for CPython
# 3.11 on amd64 and arm64, and this stage has no compiler either.
RUN pip wheel --no-build-isolation --no-deps --wheel-dir /wheels . \
 && pip download --only-binary=:all: --constraint constraints.txt --dest /wheels \
        /wheels/aqueue-*.whl

# --- runtime: the wheels installed, nothing else ------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The wheels come through a mount, so no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src/constraints.txt,target=/tmp/constraints.txt \
    pip install --no-index --find-links /wheels --constraint /tmp/constraints.txt \
        /wheels/aqueue-*.whl \
 && groupadd --system --gid 10001 aqueue \
 && useradd --system --uid 10001 --gid aqueue --home-dir /home/aqueue --create-home aqueue
# Listen on every interface: the container's network is the boundary (and the API then
# answers any Host header; set AQUEUE_ALLOWED_HOSTS to narrow it).
ENV AQUEUE_HOST=0.0.0.0 \
    AQUEUE_ROLES=api,worker,scheduler,reaper
WORKDIR /home/aqueue
USER 10001:10001
# 8000: the API (and its /metrics); 9100: the metrics of a worker or scheduler process.
EXPOSE 8000 9100
# With AQUEUE_SSL_CERTFILE both ports speak HTTPS: asked over TLS, the certificate not
# checked (it names the public host, not 127.0.0.1, and this asks only whether it answers).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as r; api = 'api' in (os.environ.get('AQUEUE_ROLES') or 'api'); port = (os.environ.get('AQUEUE_PORT') or '8000') if api else os.environ.get('AQUEUE_METRICS_PORT'); tls = bool(os.environ.get('AQUEUE_SSL_CERTFILE')); port and r.urlopen(('https' if tls else 'http') + f'://127.0.0.1:{port}/healthz', timeout=4, context=ssl._create_unverified_context() if tls else None)"]
ENTRYPOINT ["aqueue"]
CMD ["serve"]
