#!/usr/bin/env bash
# Builds the rtbench images for linux/amd64 and linux/arm64 with docker buildx and
# pushes them: the agent, the collector and the workload's two variants.
# Run it from anywhere; the build context is the repository root.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: deploy/images/build.sh [--platforms LIST] [--no-push] [--only NAMES] REGISTRY TAG

Builds with `docker buildx build` and pushes (multi-arch images need a registry):
  REGISTRY/agent:TAG               deploy/images/agent.Dockerfile
  REGISTRY/collector:TAG           deploy/images/collector.Dockerfile
  REGISTRY/workload:TAG            deploy/images/workload.Dockerfile, target scratch
  REGISTRY/workload:TAG-distro     the same binary on Alpine, target distro

  REGISTRY          e.g. ghcr.io/you or registry.local:5000/rtbench; ghcr.io/rtbench gives
                    the names the agent chart and rtctl use by default
  TAG               e.g. 0.1.0 (not "latest": plans and charts should name a fixed tag)
  --platforms LIST  default linux/amd64,linux/arm64
  --no-push         build only; with one platform the result is loaded into the
                    local docker (--load), with several it stays in the build cache
  --only NAMES      comma-separated subset of agent,collector,workload,workload-distro

Needs docker with the buildx plugin, a builder that can build for the platforms
(`docker buildx create --use`; the Python images run pip for the foreign
architecture, so that needs QEMU binfmt: `docker run --privileged --rm
tonistiigi/binfmt --install arm64,amd64`; the workload cross-compiles and does not),
and `docker login REGISTRY` for the push.
EOF
}

platforms="linux/amd64,linux/arm64"
push=1
only="agent,collector,workload,workload-distro"
positional=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --platforms) platforms="${2:?--platforms needs a value}"; shift 2 ;;
        --no-push) push=0; shift ;;
        --only) only="${2:?--only needs a value}"; shift 2 ;;
        --) shift; positional+=("$@"); break ;;
        -*) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) positional+=("$1"); shift ;;
    esac
done
if [[ ${#positional[@]} -ne 2 ]]; then
    echo "build.sh: expected REGISTRY and TAG (see --help)" >&2
    exit 2
fi
registry="${positional[0]%/}"
tag="${positional[1]}"
if [[ "$tag" == latest ]]; then
    echo "build.sh: name a fixed TAG, not latest: runs record the image they ran" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
images="$root/deploy/images"

if ! docker buildx version > /dev/null 2>&1; then
    echo "build.sh: docker buildx is not available (install the buildx plugin)" >&2
    exit 1
fi

output=(--push)
if [[ $push -eq 0 ]]; then
    if [[ "$platforms" == *,* ]]; then
        output=()
    else
        output=(--load)
    fi
fi

build() {
    local name="$1" dockerfile="$2" ref="$3"
    shift 3
    echo "==> $name: $ref ($platforms)"
    docker buildx build \
        --platform "$platforms" \
        --file "$images/$dockerfile" \
        --tag "$ref" \
        "${output[@]}" \
        "$@" \
        "$root"
}

IFS=',' read -r -a wanted <<< "$only"
for name in "${wanted[@]}"; do
    case "$name" in
        agent) build agent agent.Dockerfile "$registry/agent:$tag" ;;
        collector) build collector collector.Dockerfile "$registry/collector:$tag" ;;
        workload) build workload workload.Dockerfile "$registry/workload:$tag" --target scratch ;;
        workload-distro)
            build workload-distro workload.Dockerfile "$registry/workload:$tag-distro" --target distro ;;
        *) echo "build.sh: unknown image $name (agent, collector, workload, workload-distro)" >&2
           exit 2 ;;
    esac
done
echo "done: $registry/{agent,collector,workload}:$tag"
