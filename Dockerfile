# The Fibric server, one replica. Build from the repository root:
#   docker build -t fibric .
# Run it as docs/deploy.md#running-the-container says; N of them against one PostgreSQL and Redis
# as the rest of docs/deploy.md says.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The server never runs as root: tenants' MCP servers from the catalog run as this user too.
# Its data dir exists, owned by it and 0700, before VOLUME: a new named volume copies that owner
# and mode, so the server can write to it.
RUN useradd --create-home --uid 10001 fibric \
    && mkdir -p /var/lib/fibric \
    && chown fibric:fibric /var/lib/fibric \
    && chmod 0700 /var/lib/fibric

WORKDIR /opt/fibric
COPY pyproject.toml README.md ./
COPY fibric ./fibric
# Every runtime dependency is pinned (==) in pyproject.toml, so this installs the tested set; with the
# `otel` extra, so OTEL_EXPORTER_OTLP_ENDPOINT turns traces on (docs/operations.md#traces).
RUN pip install ".[otel]" && rm -rf /root/.cache

USER fibric
# Each replica's own data dir (its secret key, if FIBRIC_SECRET_KEY is unset, and local files);
# everything replicas share is in PostgreSQL, Redis and the ledger's data path.
ENV FIBRIC_HOST=0.0.0.0 \
    FIBRIC_PORT=8080 \
    FIBRIC_DATA_DIR=/var/lib/fibric
VOLUME ["/var/lib/fibric"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# Liveness (/healthz: the process answers), with the image's Python: the slim base has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FIBRIC_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["fibric", "serve"]
