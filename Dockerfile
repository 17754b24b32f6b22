# syntax=docker/dockerfile:1
# natsq: one image for the gateway and the workers (ghcr.io/natsq/natsq:<version>).
# Build: docker build -t ghcr.io/natsq/natsq:0.1.0 .
# The default command runs the gateway; the worker Deployment overrides it (see k8s/base/app).

# --- build: resolve dependencies from uv.lock into /app/.venv ------------------------------------
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY broker/pyproject.toml broker/
# Runtime dependencies only, exactly as locked (a layer that changes only with the lock).
RUN uv sync --frozen --no-dev --no-install-workspace
# Then the two packages themselves, natsq (app/) and dramatiq-nats (broker/), installed as wheels
# into the venv: the runtime stage needs no source tree.
COPY app/ app/
COPY broker/ broker/
COPY README.md ./
RUN uv sync --frozen --no-dev --no-editable

# --- runtime ---------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="natsq" \
      org.opencontainers.image.description="Durable background tasks: Dramatiq over NATS JetStream, a Flask gateway and Valkey results" \
      org.opencontainers.image.source="https://github.com/natsq/natsq" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 natsq \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin natsq

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/natsq-metrics

WORKDIR /app
# Owned by root and read-only for the app user: the code cannot be modified at runtime. The app
# writes only to /tmp (an emptyDir in Kubernetes, with readOnlyRootFilesystem).
COPY --from=build /app/.venv /app/.venv

USER 10001:10001

EXPOSE 8000 9191

# Answers for whichever process runs: the gateway's /healthz, else the worker's metrics port.
# Kubernetes ignores this and uses the probes in k8s/.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as r\nfor url in ('http://127.0.0.1:8000/healthz', 'http://127.0.0.1:9191/'):\n    try:\n        r.urlopen(url, timeout=3)\n        sys.exit(0)\n    except Exception:\n        pass\nsys.exit(1)"]

CMD ["gunicorn", "--config", "python:natsq.gunicorn_conf", "natsq.gateway:create_app()"]
