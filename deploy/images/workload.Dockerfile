# syntax=docker/dockerfile:1
#
# The benchmark workload (workload/server.c) as an image, in two variants:
#
#   --target scratch  (the default, last stage): the static binary and nothing else,
#                     so that pulling and starting the image measures the runtime, not
#                     the image. This is the image rtctl and the plans run.
#   --target distro   the same static binary on Alpine: a shell and a package manager
#                     for debugging inside a sandbox (kubectl exec), and a second,
#                     larger rootfs to see how much image size costs each runtime.
#
# Both listen on port 8080 (the server's default, rtctl/workload.py WORKLOAD_PORT,
# which rtctl also passes as PORT) and run as nobody (65534).
#
# Build context: the repository root.
#   docker buildx build --platform linux/amd64,linux/arm64 \
#       -f deploy/images/workload.Dockerfile --target scratch -t REGISTRY/workload:TAG .
# deploy/images/build.sh builds and pushes both variants.
#
# The compiler runs on the build machine's own architecture and cross-compiles for
# the target (no emulation needed): the native gcc when they match, Debian's cross
# toolchain otherwise. Either way it is invoked by its triple name, which native gcc
# also installs (x86_64-linux-gnu-gcc, aarch64-linux-gnu-gcc).
# tests/deploy/test_images.py runs the `make` step below on the test machine.

FROM --platform=$BUILDPLATFORM debian:bookworm-slim AS build
ARG TARGETARCH
ARG BUILDARCH
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) cross=gcc-x86-64-linux-gnu ;; \
      arm64) cross=gcc-aarch64-linux-gnu ;; \
      *) echo "unsupported TARGETARCH=$TARGETARCH (amd64 or arm64)" >&2; exit 1 ;; \
    esac; \
    if [ "$TARGETARCH" = "$BUILDARCH" ]; then \
      compiler="gcc libc6-dev"; \
    else \
      compiler="$cross libc6-dev-$TARGETARCH-cross"; \
    fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends make $compiler; \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY workload/server.c workload/Makefile workload/
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-linux-gnu ;; \
      arm64) triple=aarch64-linux-gnu ;; \
      *) echo "unsupported TARGETARCH=$TARGETARCH" >&2; exit 1 ;; \
    esac; \
    make -C workload static CC="$triple-gcc"

FROM alpine:3.20 AS distro
COPY --from=build /src/workload/build/server-static /server
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/server"]

FROM scratch AS scratch
COPY --from=build /src/workload/build/server-static /server
# No /etc/passwd in scratch: a numeric user.
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/server"]
