# Shared by tests/env/{build,up,down}. Sourced, not run.
#
# Pinned versions of every real component the tests run against. Changing one
# of these (or the Go/Maven build files next to this script) makes `build`
# produce a new cache entry; old ones can be deleted by hand.
K8S_VERSION=v1.33.13
# shellcheck disable=SC2034 # used by build, which sources this file
ETCD_VERSION=v3.5.21 # the etcd that k8s.io/kubernetes $K8S_VERSION requires
KWOK_VERSION=v0.7.0
CRICTL_VERSION=v1.34.0 # cri-tools: the oldest served here that follows Kubernetes 1.33's CRI
HELM_VERSION=v3.18.6 # keep in step with tests/env/k8s/go.mod: built there, beside Kubernetes
HELM_K8S_MINOR=33   # Helm v3.18 is built with client-go v0.33
PROMETHEUS_VERSION=v0.316.0 # the Go module's version of Prometheus 3.16.0: prometheus and promtool
KAFKA_VERSION=4.1.1 # keep in step with tests/env/kafka/pom.xml

ENV_SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TWS_CACHE_DIR=${TWS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/twitterstream-operator}
TWS_ENV_DIR=${TWS_ENV_DIR:-${TMPDIR:-/tmp}/twitterstream-env-$(id -u)}

# All human-readable output goes to stderr: `up` keeps stdout for export lines.
log() { printf '[tests/env] %s\n' "$*" >&2; }
die() {
  printf '[tests/env] error: %s\n' "$*" >&2
  exit 1
}

require_tool() { # require_tool <command> <what it is for / how to get it>
  command -v "$1" >/dev/null 2>&1 || die "missing tool '$1': $2"
}

# Short content hash of files, so a cache entry changes when its recipe does.
recipe_hash() { cat "$@" | sha256sum | cut -c1-12; }

k8s_bin_dir() { echo "$TWS_CACHE_DIR/k8s/$K8S_VERSION-$(recipe_hash "$ENV_SRC_DIR/k8s/go.mod" "$ENV_SRC_DIR/k8s/go.sum" "$ENV_SRC_DIR/k8s/etcd/main.go" "$ENV_SRC_DIR/k8s/build")"; }
crictl_bin() { echo "$TWS_CACHE_DIR/crictl/$CRICTL_VERSION/crictl"; }
kwok_bin() { echo "$TWS_CACHE_DIR/kwok/$KWOK_VERSION/kwok"; }
helm_bin() { echo "$(k8s_bin_dir)/helm"; }
promtool_bin() { echo "$TWS_CACHE_DIR/promtool/$PROMETHEUS_VERSION/promtool"; }
prometheus_bin() { echo "$TWS_CACHE_DIR/prometheus/$PROMETHEUS_VERSION/prometheus"; }
kafka_lib_dir() { echo "$TWS_CACHE_DIR/kafka/$KAFKA_VERSION-$(recipe_hash "$ENV_SRC_DIR/kafka/pom.xml")/libs"; }

# A random URL-safe token of 18 bytes (24 characters), like Python's
# secrets.token_urlsafe(18), without starting an interpreter (five of them
# took ~1.5 s of a warm `up`'s way to a ready Kafka).
random_token() { head -c 18 /dev/urandom | basenc --base64url -w0; }

# A new KRaft cluster's id (16 random bytes, base64url): never starting with
# "-", like Kafka's own Uuid.randomUuid.
kafka_cluster_id() {
  local id=-
  while [ "${id:0:1}" = - ]; do
    id=$(head -c 16 /dev/urandom | basenc --base64url -w0 | tr -d '=')
  done
  echo "$id"
}

# kafka_log4j_config <file>: the brokers' logging, Kafka's own INFO lines.
kafka_log4j_config() {
  cat >"$1" <<'EOF'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
EOF
}

# Class-data sharing: archives of the classes the Kafka JVMs load, recorded
# once per Kafka and JDK (tests/env/build), mapped by each later JVM instead
# of loading and verifying the classes again. Measured alone: a broker ready
# in 2.27 s instead of 3.37 s, the storage format in 0.55 s instead of 1.0 s,
# half the CPU each.
kafka_cds_dir() {
  local home
  home=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
  echo "$(dirname "$(kafka_lib_dir)")/cds-$(cksum <"$home/release" 2>/dev/null | cut -d' ' -f1)"
}
# kafka_cds_flags <broker|format>: the JVM flag mapping its archive, when
# recorded.
kafka_cds_flags() {
  local jsa
  jsa=$(kafka_cds_dir)/$1.jsa
  [ ! -f "$jsa" ] || echo "-XX:SharedArchiveFile=$jsa"
}
# Records the archives: a storage format and a broker that starts and stops
# (on free loopback ports, in a scratch directory).
kafka_cds_build() {
  local dir tmp pid ports
  dir=$(kafka_cds_dir)
  [ -f "$dir/broker.jsa" ] && return 0
  tmp="$dir.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  mapfile -t ports < <(free_ports 2)
  printf '%s\n' process.roles=broker,controller node.id=1 "controller.quorum.voters=1@127.0.0.1:${ports[1]}" \
    "listeners=PLAINTEXT://127.0.0.1:${ports[0]},CONTROLLER://127.0.0.1:${ports[1]}" \
    controller.listener.names=CONTROLLER "log.dirs=$tmp/data" offsets.topic.replication.factor=1 \
    transaction.state.log.replication.factor=1 transaction.state.log.min.isr=1 >"$tmp/server.properties"
  java -XX:ArchiveClassesAtExit="$tmp/format.jsa" -cp "$(kafka_lib_dir)/*" kafka.tools.StorageTool format \
    --cluster-id="$(kafka_cluster_id)" -c "$tmp/server.properties" >"$tmp/format.log" 2>&1 || return 1
  kafka_log4j_config "$tmp/log4j2.yaml"
  java -XX:ArchiveClassesAtExit="$tmp/broker.jsa" -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$tmp/log4j2.yaml" -cp "$(kafka_lib_dir)/*" kafka.Kafka "$tmp/server.properties" >"$tmp/broker.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    grep -qs 'Kafka Server started' "$tmp/broker.log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  # (Its exit writes the archive: ~2 s.)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  [ -f "$tmp/broker.jsa" ] && [ -f "$tmp/format.jsa" ] || return 1
  rm -rf "$tmp/data" "$dir" && mv "$tmp" "$dir"
}

# kafka_format <server.properties> <cluster id> [storage tool arguments...]
# The id is given as --cluster-id=<id>: as a separate word, an id starting
# with "-" (1 in 64 of those Python's base64 made) was taken for an option.
kafka_format() {
  local props=$1 id=$2
  shift 2
  # shellcheck disable=SC2046 # no flag, or one without spaces
  java $(kafka_cds_flags format) -cp "$(kafka_lib_dir)/*" ${KAFKA_LOG4J:+"-Dlog4j2.configurationFile=$KAFKA_LOG4J"} \
    kafka.tools.StorageTool format --cluster-id="$id" -c "$props" "$@"
}

install_go_tool() { # install_go_tool <binary path> <package@version> [extra -ldflags]
  local bin=$1 pkg=$2 ldflags="-s -w ${3:-}" dir tmp
  [ -x "$bin" ] && return 0
  dir=$(dirname "$bin")
  tmp="$dir.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  log "building $pkg (first time only)"
  if ! (cd "$TWS_CACHE_DIR" && GOBIN="$tmp" go install -trimpath -ldflags="$ldflags" "$pkg" >"$dir.build.log" 2>&1); then
    die "building $pkg failed; see $dir.build.log"
  fi
  rm -rf "$dir" && mv "$tmp" "$dir"
}
# Helm's version stamps, as its own release build sets them (its Makefile):
# the version, and the Kubernetes version `helm template` and `helm lint`
# assume without a cluster, which follows the client-go Helm is built with
# (v0.33 -> 1.33). Built by tests/env/k8s/build.
helm_ldflags() {
  echo "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR" \
    "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR"
}

# Prints N distinct free TCP ports on 127.0.0.1, one per line. The sockets are
# held open until all are chosen so that the N ports differ from each other.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

pid_file() { echo "$TWS_ENV_DIR/pids/$1.pid"; }
log_file() { echo "$TWS_ENV_DIR/logs/$1.log"; }

# A component is running when its PID file names a live process whose command
# line mentions this environment's state dir: a recycled PID of some other
# process never counts.
is_running() {
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$TWS_ENV_DIR"
}

# start_daemon <name> <command...>: runs it in its own session (so `down` can
# signal its whole process group), output to logs/<name>.log.
start_daemon() {
  local name=$1
  shift
  mkdir -p "$TWS_ENV_DIR/pids" "$TWS_ENV_DIR/logs"
  # Without job control a background child is not a group leader, so setsid
  # calls setsid(2) in place and $! is the daemon's own PID.
  # Fds 8 and 9 hold up's and build's flocks: a daemon must not inherit them,
  # or the next `up` would wait for the lock for as long as the daemon lives.
  setsid "$@" >"$(log_file "$name")" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$(pid_file "$name")"
}

stop_daemon() {
  local name=$1 f pid
  f=$(pid_file "$name")
  [ -f "$f" ] || return 0
  if is_running "$name"; then
    pid=$(cat "$f")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      [ -e "/proc/$pid" ] || break
      sleep 0.1
    done
    if [ -e "/proc/$pid" ]; then
      log "$name did not stop within 10 s of SIGTERM; sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

# wait_for <name> <seconds> <command...>: polls the command until it succeeds;
# on timeout, or when the component's process has died, fails naming its log.
# True when the daemon this script just started has died. Not is_running: until
# the forked child has exec'd, its command line is still this script's, which
# does not name the state dir (on a loaded machine that window lasted long enough
# to report a healthy kwok as "exited during start-up").
has_exited() {
  local f pid state
  f=$(pid_file "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] || return 1
  # The state follows the command name, which is in parentheses and may hold spaces.
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || return 0
  state=${state%% *}
  [ -z "$state" ] || [ "$state" = Z ]
}

wait_for() {
  local name=$1 secs=$2 deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if has_exited "$name"; then
      die "$name exited during start-up; see $(log_file "$name") (last line: $(tail -n 1 "$(log_file "$name")" 2>/dev/null))"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "$name did not become ready within ${secs}s; see $(log_file "$name")"
    fi
    sleep 0.2
  done
}
