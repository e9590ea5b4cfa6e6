# shellcheck shell=bash
# Sourced by tests/env/{build,up}: an OCI registry, CNCF Distribution's
# `registry` built from its Go module, serving HTTPS with a certificate of the
# environment's CA on $ENV_HOST (the host's end of the real node's veth), so
# the node's containerd pulls from it as a cluster pulls from a registry. The
# release test pushes the images and the chart there (tests/release).
#
#   TWS_REGISTRY      host:port of the registry
#   TWS_REGISTRY_CA   the CA that signed its certificate (the environment's)
#
# Storage is $TWS_ENV_DIR/registry (gone with `down`); no authentication: it
# listens only on this machine's addresses.

REGISTRY_VERSION=v3.0.0

registry_bin() { echo "$TWS_CACHE_DIR/registry/$REGISTRY_VERSION/registry"; }

# What tests/release signs and describes releases with, built on first use
# (3 min each, cold) rather than by `build`, so the demo does not wait for
# them: cosign (Sigstore) and syft (Anchore's SBOM generator).
COSIGN_VERSION=v2.6.5
SYFT_VERSION=v1.57.2
cosign_bin() { echo "$TWS_CACHE_DIR/cosign/$COSIGN_VERSION/cosign"; }
syft_bin() { echo "$TWS_CACHE_DIR/syft/$SYFT_VERSION/syft"; }
release_tools_build() {
  mkdir -p "$TWS_CACHE_DIR/cosign" "$TWS_CACHE_DIR/syft"
  install_go_tool "$(cosign_bin)" "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
  install_go_tool "$(syft_bin)" "github.com/anchore/syft/cmd/syft@$SYFT_VERSION"
}

# For tests/env/build --tests.
registry_build() {
  mkdir -p "$TWS_CACHE_DIR/registry"
  install_go_tool "$(registry_bin)" "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
}

# Starts the registry (once per environment); needs $PKI, $ENV_HOST and
# gen_cert from tests/env/up.
registry_up() {
  local dir=$TWS_ENV_DIR/registry port_file
  # Only the release test needs it, and says so when it is missing: the
  # demo's environment goes without, silently.
  [ -x "$(registry_bin)" ] || return 0
  port_file=$dir/port
  mkdir -p "$dir/storage"
  [ -f "$port_file" ] || free_ports 1 >"$port_file"
  REGISTRY_PORT=$(cat "$port_file")
  TWS_REGISTRY=$ENV_HOST:$REGISTRY_PORT
  gen_cert registry "/CN=twitterstream-registry" "IP:$ENV_HOST,IP:127.0.0.1,DNS:localhost"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $TWS_REGISTRY
  tls:
    certificate: $PKI/registry.crt
    key: $PKI/registry.key
EOF
  if ! is_running registry; then
    log "starting the OCI registry (distribution $REGISTRY_VERSION) on https://$TWS_REGISTRY"
    # OTEL_TRACES_EXPORTER: Distribution 3 exports traces to a collector on
    # localhost by default; there is none.
    OTEL_TRACES_EXPORTER=none start_daemon registry "$(registry_bin)" serve "$dir/config.yml"
  fi
  wait_for registry 60 curl -sf --cacert "$PKI/ca.crt" "https://$TWS_REGISTRY/v2/"
  # The real node's containerd trusts it (hosts.toml is read at every pull).
  if [ -d "$TWS_ENV_DIR/containerd" ]; then
    local hosts=$TWS_ENV_DIR/containerd/certs.d/$TWS_REGISTRY
    mkdir -p "$hosts"
    cat >"$hosts/hosts.toml" <<EOF
server = "https://$TWS_REGISTRY"
[host."https://$TWS_REGISTRY"]
  capabilities = ["pull", "resolve"]
  ca = "$PKI/ca.crt"
EOF
  fi
}

registry_exports() {
  [ -n "${TWS_REGISTRY:-}" ] || return 0
  cat <<EOF
export TWS_REGISTRY='$TWS_REGISTRY'
export TWS_REGISTRY_CA='$PKI/ca.crt'
EOF
}
