# syntax=docker/dockerfile:1
# bk-otel-exporter container image.
#
#   docker build -t bk-otel-exporter \
#     --build-arg VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')" \
#     --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run -d --name bk-otel-exporter \
#     -e BK_BASE_URL=https://paas.example.com -e BK_APP_CODE=my-app -e BK_APP_SECRET=... \
#     -e BK_ALARM_IDS=1234,5678 -e OTEL_EXPORTER_OTLP_ENDPOINT=http://otelcol:4317 \
#     -v bk-otel-state:/var/lib/bk-otel-exporter -p 127.0.0.1:9464:9464 bk-otel-exporter
#
# Configuration: the built-in /etc/bk-otel-exporter/config.yaml takes everything from environment
# variables (see config/recipes/container/exporter.yaml); mount your own file over it, or point
# BK_OTEL_EXPORTER_CONFIG elsewhere, for full control. The state store lives in the volume.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a virtualenv with the locked dependencies, then the exporter itself -------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/bk-otel-exporter
ENV PATH=/opt/bk-otel-exporter/bin:$PATH

WORKDIR /src
# Dependencies first, from the lock only (exact versions; pip checks hashes when the lock has
# them): this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml README.md ./
COPY exporter ./exporter
# --no-deps: everything the exporter needs is already installed, at the locked versions.
RUN pip install --no-cache-dir --no-deps . \
 && python -m compileall -q /opt/bk-otel-exporter \
 && bk-otel-exporter --version

# ---- runtime: the virtualenv, a non-root user, nothing else ------------------------------------
FROM ${PYTHON_IMAGE}

# OCI annotations: what the image is, which version, built from which commit of which repository.
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=https://github.com/bk-otel-exporter/bk-otel-exporter
LABEL org.opencontainers.image.title="bk-otel-exporter" \
      org.opencontainers.image.description="BlueKing Monitor alarm flow records to OpenTelemetry over OTLP" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

RUN groupadd --system --gid 10001 bkotel \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/bk-otel-exporter --shell /usr/sbin/nologin bkotel \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/bk-otel-exporter \
 && install -d -m 0755 /etc/bk-otel-exporter

COPY --from=builder /opt/bk-otel-exporter /opt/bk-otel-exporter
COPY config/recipes/container/exporter.yaml /etc/bk-otel-exporter/config.yaml

ENV PATH=/opt/bk-otel-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BK_OTEL_EXPORTER_CONFIG=/etc/bk-otel-exporter/config.yaml

USER 10001:10001
WORKDIR /var/lib/bk-otel-exporter
VOLUME ["/var/lib/bk-otel-exporter"]
# /healthz, /readyz, /metrics (server.listen must be 0.0.0.0:9464 inside a container).
EXPOSE 9464

# No curl in the slim image: the interpreter does the probe. urlopen raises on a 503.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

ENTRYPOINT ["bk-otel-exporter"]
CMD ["run"]
