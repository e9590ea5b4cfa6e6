# Shared by tests/kind/{up,check,down}. Sourced, not run.
# shellcheck disable=SC2034 # its variables are used by the scripts that source it
#
# The kind path runs the real images on a real (kind) cluster: Docker builds
# both images, kind loads them into its node, a single-node Kafka runs in the
# cluster (kafka.yaml), Helm installs charts/twitterstream-operator, and
# examples/synthetic.yaml must produce window results.
source "$(dirname "${BASH_SOURCE[0]}")/../env/lib.sh" # TWS_CACHE_DIR, HELM_VERSION, helm_bin, require_tool

log() { printf '[tests/kind] %s\n' "$*" >&2; }
die() {
  printf '[tests/kind] error: %s\n' "$*" >&2
  exit 1
}

KIND_VERSION=v0.33.0
# The oldest Kubernetes that kind $KIND_VERSION publishes a node image for (the
# local test environment runs v1.33). The digest is from kind's release notes:
# kind only supports the exact images built for a release.
KIND_NODE_IMAGE=kindest/node:v1.34.11@sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d
KIND_CLUSTER=twitterstream
KIND_STATE_DIR=${TMPDIR:-/tmp}/twitterstream-kind-$(id -u)
# A kubeconfig of its own: never the user's ~/.kube/config, nor the
# KUBECONFIG that `eval "$(tests/env/up)"` may have exported.
export KUBECONFIG=$KIND_STATE_DIR/kubeconfig

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Images are tagged with the workspace version, as the chart's defaults expect.
VERSION=$(awk -F'"' '/^\[workspace\.package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version *=/ { print $2; exit }' "$REPO_ROOT/Cargo.toml")
[ -n "$VERSION" ] || die "no [workspace.package] version in $REPO_ROOT/Cargo.toml"
OPERATOR_REPO=ghcr.io/twitterstream-io/twitterstream-operator
WORKER_IMAGE=ghcr.io/twitterstream-io/twitterstream-workers:$VERSION
OPERATOR_NAMESPACE=twitterstream-system
KAFKA_BOOTSTRAP=kafka.kafka.svc.cluster.local:9092
STREAM=synthetic                # examples/synthetic.yaml's name
OUTPUT_TOPIC=synthetic-windows  # and its spec.kafka.outputTopic

# go_tool <binary path> <package@version>: builds a pinned Go tool once into the cache.
go_tool() {
  local bin=$1 pkg=$2 tmp
  if [ ! -x "$bin" ]; then
    require_tool go "the Go toolchain builds $pkg"
    log "building $pkg (first time only)"
    tmp="$(dirname "$bin").tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    (cd "$TWS_CACHE_DIR" && GOBIN="$tmp" go install -trimpath -ldflags="-s -w" "$pkg") >&2 ||
      die "building $pkg failed"
    rm -rf "$(dirname "$bin")" && mv "$tmp" "$(dirname "$bin")"
  fi
  echo "$bin"
}

kind_bin() { # kind from PATH when it is the pinned version, else built once
  if command -v kind >/dev/null 2>&1 && [[ "$(kind version)" == "kind $KIND_VERSION "* ]]; then
    command -v kind
  else
    mkdir -p "$TWS_CACHE_DIR/kind"
    go_tool "$TWS_CACHE_DIR/kind/$KIND_VERSION/kind" "sigs.k8s.io/kind@$KIND_VERSION"
  fi
}
helm_tool() { # the Helm tests/env pins, built as tests/env/build builds it (same stamps, same cache place)
  if [ ! -x "$(helm_bin)" ]; then
    require_tool go "the Go toolchain builds Helm $HELM_VERSION"
    log "building Helm $HELM_VERSION (first time only)"
    mkdir -p "$(k8s_bin_dir)"
    "$ENV_SRC_DIR/k8s/build" "$(k8s_bin_dir)" helm.sh/helm/v3/cmd/helm >"$TWS_CACHE_DIR/build-helm.log" 2>&1 ||
      die "building Helm failed; see $TWS_CACHE_DIR/build-helm.log"
  fi
  helm_bin
}
