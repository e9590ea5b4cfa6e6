# shellcheck shell=bash
# Sourced by tests/env/{up,down}: the real node, a kubelet that runs pods in
# real containers next to kwok's simulated one.
#
#   host netns                      node netns ($NODE_NETNS)
#   apiserver, Kafka, tests         containerd + runc, kubelet, kube-proxy
#   $NODE_HOST_IP  <── veth ──>     $NODE_IP ── routes ──> bridge tws0 ($POD_CIDR)
#
# The node lives in a network namespace of its own, so that its iptables rules
# (kube-proxy), its forwarding and its bridge never touch the host's: the host
# gets one veth with $NODE_HOST_IP and one route to $POD_CIDR through it, and
# nothing routes or NATs towards any other interface (the host keeps
# ip_forward=0). The servers pods talk to (the apiserver, Kafka, the tests' X
# API) listen on $NODE_HOST_IP, which the host reaches as a local address.
#
# Processes stay in the host's mount namespace (nsenter --net only), so the
# kubelet's volumes, containerd's rootfs mounts and the pods' netns files are
# visible to each other and to `down`. Everything the node creates is recorded
# in $TWS_ENV_DIR/node.env, and `down` removes exactly that: the pods (through
# the CRI, which tears down their netns and mounts), the processes (PID files),
# mounts left under $TWS_ENV_DIR, the cgroups under $NODE_CGROUP_ROOT, and the
# node netns (which takes its veth, bridge, routes and iptables rules along).
#
# Needs root, iproute2, nsenter, iptables, containerd, runc, CNI plugins
# (Debian: containerd runc containernetworking-plugins iptables), and buildah,
# debootstrap and gcc for the images (the pause image, tests/env/images); `node_prerequisites` installs the Debian packages when it can
# and otherwise names what is missing, in one line.

NODE_NAME=tws-node-0
# Not loopback: the apiserver reaches the kubelet (logs, exec) at $NODE_IP.
NODE_SUBNET_PREFIX=10.200.0 # host side .1, node side .2
POD_SUBNET_PREFIX=10.201.0  # the CNI bridge is .1, pods from .2
NODE_HOST_IP=$NODE_SUBNET_PREFIX.1
NODE_IP=$NODE_SUBNET_PREFIX.2
POD_CIDR=$POD_SUBNET_PREFIX.0/24
# Pods run only where they are sent: the real node is tainted, and a namespace
# annotated with the node selector and the toleration below (admission plugins
# PodNodeSelector and PodTolerationRestriction) places all its pods on it.
NODE_TAINT_KEY=twitterstream.io/real-node
PAUSE_IMAGE=localhost/twitterstream/pause:3.10
NODE_FILE=$TWS_ENV_DIR/node.env

# Short names from this environment's directory, so that two environments
# (two users) on one machine do not collide.
node_names() {
  local h
  h=$(printf '%s' "$TWS_ENV_DIR" | sha256sum | cut -c1-6)
  NODE_NETNS=tws-node-$h
  NODE_HOST_VETH=tws${h}h # 10 characters; interface names allow 15
  NODE_NS_VETH=tws${h}n
  NODE_CGROUP_ROOT=/tws-node-$h
}

# Sets `missing` (commands) and `pkgs` (the Debian packages that have them).
node_missing() {
  missing=() pkgs=()
  local t
  for t in ip:iproute2 nsenter:util-linux iptables:iptables containerd:containerd runc:runc \
    buildah:buildah debootstrap:debootstrap gcc:gcc; do
    command -v "${t%%:*}" >/dev/null 2>&1 || { missing+=("${t%%:*}"); pkgs+=("${t#*:}"); }
  done
  [ -x /usr/lib/cni/bridge ] || { missing+=(cni-plugins); pkgs+=(containernetworking-plugins); }
}

# Prints nothing and succeeds when the node can run; otherwise prints the one
# reason it cannot.
node_prerequisites() {
  [ "$(id -u)" = 0 ] || { echo "it needs root (network namespaces, mounts, cgroups)"; return 0; }
  local missing pkgs
  node_missing
  if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${pkgs[*]} from Debian's packages for the real node"
    { apt-get install -y -q "${pkgs[@]}" || { apt-get update -q && apt-get install -y -q "${pkgs[@]}"; }; } \
      >"$TWS_CACHE_DIR/install-node.log" 2>&1 || true
    node_missing
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing ${missing[*]} (Debian: apt-get install containerd runc containernetworking-plugins iptables buildah debootstrap gcc)"
    return 0
  fi
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || { echo "no cgroup file system at /sys/fs/cgroup"; return 0; }
  if ip -4 addr | grep -qE "inet ($NODE_SUBNET_PREFIX|$POD_SUBNET_PREFIX)\." && [ ! -f "$NODE_FILE" ]; then
    echo "$NODE_SUBNET_PREFIX.0/24 or $POD_CIDR is already in use on this machine"
    return 0
  fi
}

in_node() { nsenter --net="/var/run/netns/$NODE_NETNS" "$@"; }

# The node's network: its netns, the veth to the host, the pod bridge's
# forwarding. Idempotent.
node_network_up() {
  node_names
  if [ ! -e "/var/run/netns/$NODE_NETNS" ]; then
    log "creating network namespace $NODE_NETNS ($NODE_IP) and veth $NODE_HOST_VETH ($NODE_HOST_IP)"
    ip netns add "$NODE_NETNS"
    ip link add "$NODE_HOST_VETH" type veth peer name "$NODE_NS_VETH" netns "$NODE_NETNS"
    ip addr add "$NODE_HOST_IP/24" dev "$NODE_HOST_VETH"
    ip link set "$NODE_HOST_VETH" up
    ip -n "$NODE_NETNS" link set lo up
    ip -n "$NODE_NETNS" addr add "$NODE_IP/24" dev "$NODE_NS_VETH"
    ip -n "$NODE_NETNS" link set "$NODE_NS_VETH" up
    # Pods answer the host through the node; the host forwards nothing.
    ip route add "$POD_CIDR" via "$NODE_IP" dev "$NODE_HOST_VETH"
    # Forwarding between the pods' bridge and the veth, inside the node only;
    # bridged traffic through iptables so that a Service's pod behind the same
    # bridge answers through its DNAT (as kube-proxy requires).
    in_node sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
      net.bridge.bridge-nf-call-iptables=1 >/dev/null 2>&1 ||
      in_node sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 >/dev/null
  fi
  cat >"$NODE_FILE" <<EOF
NODE_NETNS=$NODE_NETNS
NODE_HOST_VETH=$NODE_HOST_VETH
NODE_CGROUP_ROOT=$NODE_CGROUP_ROOT
NODE_NAME=$NODE_NAME
NODE_HOST_IP=$NODE_HOST_IP
NODE_IP=$NODE_IP
EOF
}

node_containerd_up() {
  local dir=$TWS_ENV_DIR/containerd
  CONTAINERD_SOCK=$dir/containerd.sock
  mkdir -p "$dir" "$TWS_ENV_DIR/cni/net.d" "$TWS_ENV_DIR/cni/networks"
  cat >"$TWS_ENV_DIR/cni/net.d/10-tws.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tws",
  "plugins": [
    {
      "type": "bridge", "bridge": "tws0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$TWS_ENV_DIR/cni/networks",
        "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
  ]
}
EOF
  # restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, and without it
  # runc fails every sandbox ("failed to update /proc/self/oom_score_adj:
  # Permission denied", seen as "can't get final child's PID from pipe: EOF").
  cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$TWS_ENV_DIR/cni/net.d"
  # Registries' hosts.toml (the environment's own registry: tests/env/registry.sh).
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/certs.d"
EOF
  if ! is_running containerd; then
    log "starting containerd $(containerd --version | awk '{print $3}') in $NODE_NETNS"
    start_daemon containerd nsenter --net="/var/run/netns/$NODE_NETNS" \
      containerd --config "$dir/config.toml" --log-level warn
  fi
  wait_for containerd 60 ctr --address "$CONTAINERD_SOCK" version
}

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# The sandbox ("pause") image: no registry is reachable, so it is built here
# from a five-line static C program, packed by buildah, and imported.
node_pause_image() {
  ctr_k8s images ls -q | grep -qxF "$PAUSE_IMAGE" && return 0
  local dir=$TWS_CACHE_DIR/pause archive
  archive=$dir/pause-$(recipe_hash "$ENV_SRC_DIR/node.sh").tar
  if [ ! -f "$archive" ]; then
    log "building the pause image $PAUSE_IMAGE"
    rm -rf "$dir" && mkdir -p "$dir"
    cat >"$dir/pause.c" <<'EOF'
/* The sandbox's init: sleeps until SIGTERM/SIGINT, reaps orphans. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int s) { (void)s; _exit(0); }
static void on_child(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, on_term); signal(SIGTERM, on_term); signal(SIGCHLD, on_child);
  for (;;) pause();
}
EOF
    gcc -Os -static -o "$dir/pause" "$dir/pause.c" 2>"$dir/build.log" ||
      die "compiling the pause image's program failed; see $dir/build.log"
    image_archive "$dir/pause" /pause '["/pause"]' 65535 "$PAUSE_IMAGE" "$archive.tmp" >>"$dir/build.log" 2>&1 ||
      die "packing the pause image failed; see $dir/build.log"
    mv "$archive.tmp" "$archive"
  fi
  ctr_k8s images import --no-unpack=false "$archive" >/dev/null ||
    die "importing $archive into containerd failed"
}

# buildah's storage for this environment's images, cached outside the clone.
buildah_() {
  buildah --root "$TWS_CACHE_DIR/buildah/storage" --runroot "$TWS_CACHE_DIR/buildah/run" \
    --storage-driver overlay "$@"
}

# image_archive <file> <path in image> <entrypoint JSON> <uid> <name> <archive>:
# a single-file image from scratch, saved as a docker-archive.
image_archive() {
  local c
  c=$(buildah_ from scratch)
  buildah_ copy --chmod 0755 "$c" "$1" "$2"
  buildah_ config --entrypoint "$3" --user "$4:$4" "$c"
  buildah_ commit --rm "$c" "$5"
  rm -f "$6"
  buildah_ push "$5" "docker-archive:$6:$5"
}

node_certs() { # the kubelet's client certificate, as the Node authorizer wants it
  gen_cert "kubelet-$NODE_NAME" "/O=system:nodes/CN=system:node:$NODE_NAME"
  gen_cert kube-proxy "/CN=system:kube-proxy"
  write_kubeconfig "$TWS_ENV_DIR/kubelet.kubeconfig" "kubelet-$NODE_NAME"
  write_kubeconfig "$TWS_ENV_DIR/kube-proxy.kubeconfig" kube-proxy
}

node_kubelet_up() {
  local dir=$TWS_ENV_DIR/kubelet ctrl
  mkdir -p "$dir"
  # cgroup v1 here, and the cgroupfs driver (no systemd). The kubelet makes
  # its pods' cgroups below $NODE_CGROUP_ROOT, which `down` removes.
  for ctrl in /sys/fs/cgroup/*/; do
    if [ -d "$ctrl" ] && [ ! -L "${ctrl%/}" ]; then mkdir -p "$ctrl${NODE_CGROUP_ROOT#/}" 2>/dev/null || true; fi
  done
  : >"$dir/resolv.conf"
  cat >"$dir/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: $NODE_CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
# No cluster DNS and no host resolver inside the node's netns: pods reach
# their servers by address.
resolvConf: $dir/resolv.conf
clusterDomain: cluster.local
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
podCIDR: $POD_CIDR
serializeImagePulls: false
# A rotated Secret reaches the pods' volumes within ~10 s (default 1 min).
syncFrequency: 10s
# Images are imported, never pulled: the kubelet must not collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
localStorageCapacityIsolation: false
# Containers' logs inside the environment (tests read them), not /var/log/pods.
podLogsDir: $dir/pod-logs
rotateCertificates: false
serverTLSBootstrap: false
shutdownGracePeriod: 0s
EOF
  if ! is_running kubelet; then
    log "starting kubelet $K8S_VERSION ($NODE_NAME at $NODE_IP)"
    start_daemon kubelet nsenter --net="/var/run/netns/$NODE_NETNS" \
      "$K8S_BIN/kubelet" --config "$dir/config.yaml" --kubeconfig "$TWS_ENV_DIR/kubelet.kubeconfig" \
      --root-dir "$dir/root" --cert-dir "$dir/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
      --node-labels "type=real,kubernetes.io/os=linux" --v 1
  fi
}

node_kube_proxy_up() {
  cat >"$TWS_ENV_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $TWS_ENV_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
# In a netns of its own, nf_conntrack_max is the host's and read-only: leave it.
conntrack: {maxPerCore: 0, min: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
  if ! is_running kube-proxy; then
    log "starting kube-proxy (iptables mode) in $NODE_NETNS"
    start_daemon kube-proxy nsenter --net="/var/run/netns/$NODE_NETNS" \
      "$K8S_BIN/kube-proxy" --config "$TWS_ENV_DIR/kube-proxy.yaml" --v 1
  fi
}

node_ready() {
  kubectl --kubeconfig "$KUBECONFIG_FILE" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

# Starts containerd, the pause image, the kubelet and kube-proxy, without
# waiting for the node to be Ready (node_wait_ready). Fails (with die's one
# line) when it cannot.
node_start() {
  node_names
  node_containerd_up
  node_pause_image
  node_kubelet_up
  node_kube_proxy_up
}

# Returns once the node is Ready (its kubelet registered, the CNI loaded).
node_wait_ready() {
  wait_for kubelet 120 node_ready
}

crictl_() { "$(crictl_bin)" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 30s "$@"; }

# Stops the node's processes and removes its pods, mounts and cgroups; the
# network stays (the servers listen on $NODE_HOST_IP).
node_stop() {
  [ -f "$NODE_FILE" ] || return 0
  # shellcheck source=/dev/null # written by node_network_up
  source "$NODE_FILE"
  CONTAINERD_SOCK=$TWS_ENV_DIR/containerd/containerd.sock
  stop_daemon kube-proxy
  stop_daemon kubelet
  if is_running containerd && [ -n "$(crictl_ pods -q 2>/dev/null)" ]; then
    # Through the CRI: containerd stops each pod's containers, calls the CNI
    # to release its address, and removes its netns and mounts.
    log "removing the real node's pods"
    crictl_ rmp --force --all >/dev/null 2>&1 || true
  fi
  stop_daemon containerd
  # Whatever is still mounted below the environment (kubelet volumes, rootfs,
  # shm), deepest first.
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(findmnt -rn -o TARGET | grep -F "$TWS_ENV_DIR/" | sort -r)
  local ctrl d
  for ctrl in /sys/fs/cgroup/*/; do
    [ -d "$ctrl${NODE_CGROUP_ROOT#/}" ] || continue
    while read -r d; do rmdir "$d" 2>/dev/null || true; done < <(find "$ctrl${NODE_CGROUP_ROOT#/}" -depth -type d)
  done
}

# node_stop, then the network: the node's netns takes its veth (and the host
# route through it), its bridge and its iptables rules along.
node_down() {
  [ -f "$NODE_FILE" ] || return 0
  node_stop
  ip netns del "$NODE_NETNS" 2>/dev/null || true
  ip link del "$NODE_HOST_VETH" 2>/dev/null || true
}
