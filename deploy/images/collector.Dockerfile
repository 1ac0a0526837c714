# syntax=docker/dockerfile:1
#
# The rtbench collector (`collector serve`), on the monitoring machine
# (deploy/monitoring/compose.yaml builds it from here).
#
# Build context: the repository root.
#   docker buildx build --platform linux/amd64,linux/arm64 \
#       -f deploy/images/collector.Dockerfile -t REGISTRY/collector:TAG .
#
# Same two stages as the agent image. The collector needs nothing from the host:
# it runs as 65532 and writes only its SQLite journal under /var/lib/rtbench (mount
# a volume there: the journal is the source of truth of every run).
#
# Defaults for a container, set in the environment so that flags still win:
# listen on every interface (the port is what agents and rtctl connect to) and keep
# the journal on the volume. A non-loopback --listen without a token is refused by
# the collector itself, so this image does not start until it is given
# RTBENCH_COLLECTOR_AGENT_TOKEN (or _FILE, and a control token) or, deliberately,
# RTBENCH_COLLECTOR_INSECURE=true. The image also holds `rtctl`, handy for
# `docker compose exec collector rtctl runs`.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/rtbench
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rtbench/ rtbench/
COPY agent/ agent/
COPY collector/ collector/
COPY rtctl/ rtctl/
COPY simcluster/ simcluster/
RUN /opt/rtbench/bin/pip install . \
 && /opt/rtbench/bin/collector serve --help > /dev/null

FROM python:3.11-slim-bookworm
COPY --from=build /opt/rtbench /opt/rtbench
ENV PATH=/opt/rtbench/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RTBENCH_COLLECTOR_LISTEN=0.0.0.0:7070 \
    RTBENCH_COLLECTOR_JOURNAL=/var/lib/rtbench/journal.sqlite
RUN useradd --system --uid 65532 --user-group --no-create-home \
        --home-dir /var/lib/rtbench --shell /usr/sbin/nologin rtbench \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/rtbench
USER 65532:65532
WORKDIR /var/lib/rtbench
VOLUME ["/var/lib/rtbench"]
EXPOSE 7070
ENTRYPOINT ["collector", "serve"]
