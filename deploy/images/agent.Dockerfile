# syntax=docker/dockerfile:1
#
# The rtbench agent (`agent run`), one per node as a DaemonSet (charts/rtbench-agent).
#
# Build context: the repository root.
#   docker buildx build --platform linux/amd64,linux/arm64 \
#       -f deploy/images/agent.Dockerfile -t REGISTRY/agent:TAG .
#
# Two stages: the first installs the project with its dependencies into a virtualenv
# (every dependency ships wheels for amd64 and arm64, so no compiler is needed), the
# second copies only that virtualenv onto the same slim Python base.
#
# User: 65532, not root. What the agent reads works without root: /proc (node memory
# and CPU), the pods' cgroup files (world-readable), the Kubernetes API (its service
# account token). It writes only its spool, under --state-dir (/var/lib/rtbench-agent,
# owned by 65532 here, so an emptyDir there works as is).
# The exceptions are host paths owned by root: containerd's socket
# (/run/k3s/containerd/containerd.sock on K3s, /run/containerd/containerd.sock
# elsewhere; containerd creates it mode 0660, root:root) and a hostPath state dir
# (created root:root 0755 by the kubelet). charts/rtbench-agent mounts both by
# default and therefore sets runAsUser: 0 with every capability dropped, no privilege
# escalation and a read-only root filesystem: the container uses root's ownership of
# those two paths and nothing else. Without the socket and with an emptyDir state dir
# it runs as this image's 65532 (the chart's values.yaml says how). An alternative
# for the socket alone is the supplementary group 0 (supplementalGroups: [0]).
# See deploy/threat-model.md: the socket is root-equivalent on the node.

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
 && /opt/rtbench/bin/agent run --help > /dev/null

FROM python:3.11-slim-bookworm
COPY --from=build /opt/rtbench /opt/rtbench
ENV PATH=/opt/rtbench/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 65532 --user-group --no-create-home \
        --home-dir /var/lib/rtbench-agent --shell /usr/sbin/nologin rtbench \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/rtbench-agent
USER 65532:65532
WORKDIR /var/lib/rtbench-agent
ENTRYPOINT ["agent", "run"]
