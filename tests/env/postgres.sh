# shellcheck shell=bash
# Sourced by tests/env/{up,down,restart-postgres}: a real PostgreSQL server
# (Debian's package, the newest major installed) for the sink tests.
#
# It listens on $ENV_HOST (the host's end of the real node's veth, so pods
# reach it; also 127.0.0.1 when that differs) with TLS only as clients ask for
# it: a server certificate from a CA generated here, which the tests trust
# through $POSTGRES_CA. Over TCP every role logs in with SCRAM-SHA-256; the
# superuser `postgres` has a random password, which the tests use
# ($POSTGRES_SUPERUSER_URL) to create the databases and roles of each test.
# Over the Unix socket, in a directory only the `postgres` OS user (and root)
# can open, `postgres` is trusted: that is how this script sets the password.
#
# Everything lives in $TWS_ENV_DIR/postgres:
#   data/                 the cluster (initdb), owned by the postgres user
#   socket/               unix_socket_directories, mode 0700
#   ca.crt                the CA (world-readable); ca.key next to it (0600)
#   server.crt/key        the server's certificate and key (key 0600, postgres's)
#   postgres.env          POSTGRES_HOST and POSTGRES_PORT, chosen once, so that a
#                         restart (tests/env/restart-postgres) keeps the address
#   superuser-password    0600
#
# initdb and postgres refuse to run as root: as root, they (and pg_ctl, psql
# on the socket) run as Debian's `postgres` system user through setpriv, which
# execs, so the PID start_daemon records is the server's own.
#
# Durability is the real server's: synchronous_commit stays on, because tests
# stop it with `pg_ctl stop -m immediate` and then count the rows committed
# before. fsync=off could lose data only on an OS crash, but it saved just
# 0.15 ms per commit here (0.19 ms -> 0.05 ms), so fsync stays on too.

PG_DIR=$TWS_ENV_DIR/postgres
PG_DATA=$PG_DIR/data
PG_SOCKET_DIR=$PG_DIR/socket
PG_ENV_FILE=$PG_DIR/postgres.env
PG_PASSWORD_FILE=$PG_DIR/superuser-password
# The prefix that runs a command as the postgres OS user (empty when not root).
if [ "$(id -u)" = 0 ]; then
  PG_AS=(setpriv --reuid=postgres --regid=postgres --init-groups)
else
  PG_AS=()
fi

# Prints the newest /usr/lib/postgresql/<major>/bin with a server and initdb.
postgres_bin_dir() {
  local d best=""
  # A fresh CI machine may not have it: as root, Debian's package is
  # installed once (its logs in the cache), as `build` does for kcat.
  if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null && [ "$(id -u)" = 0 ] &&
    command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's postgresql-15 (first time only)"
    mkdir -p "$TWS_CACHE_DIR"
    { apt-get install -y -q postgresql-15 || { apt-get update -q && apt-get install -y -q postgresql-15; }; } \
      >"$TWS_CACHE_DIR/install-postgresql.log" 2>&1 || true
  fi
  # sort -V: major 10 is newer than 9.
  while read -r d; do
    [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && best=$d
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
  [ -n "$best" ] || die "missing the PostgreSQL server (/usr/lib/postgresql/<major>/bin/postgres and initdb): apt-get install postgresql-15 (Debian's package)"
  echo "$best"
}

# Runs a PostgreSQL tool as the postgres OS user, from a directory it can read
# (the caller's may be root's home).
as_postgres() { (cd "$PG_DIR" && "${PG_AS[@]}" "$@"); }

# The server's certificate and the CA that signed it, generated once.
postgres_tls() {
  [ -f "$PG_DIR/server.crt" ] && return 0
  local host=$1 san ext=$PG_DIR/server.ext
  san="IP:$host,DNS:localhost"
  [ "$host" = 127.0.0.1 ] || san="$san,IP:127.0.0.1"
  (umask 077 && openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PG_DIR/ca.key" \
    -subj "/CN=twitterstream-test-postgres-ca" -days 365 -out "$PG_DIR/ca.crt" 2>/dev/null) ||
    die "generating the PostgreSQL CA failed"
  (umask 077 && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PG_DIR/server.key" \
    -subj "/CN=$host" -out "$PG_DIR/server.csr" 2>/dev/null) || die "generating the PostgreSQL server key failed"
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=$san" >"$ext"
  openssl x509 -req -in "$PG_DIR/server.csr" -CA "$PG_DIR/ca.crt" -CAkey "$PG_DIR/ca.key" -CAcreateserial \
    -days 365 -extfile "$ext" -out "$PG_DIR/server.crt" 2>/dev/null || die "signing the PostgreSQL server certificate failed"
  rm -f "$PG_DIR/server.csr" "$PG_DIR/ca.srl" "$ext"
  chmod 0644 "$PG_DIR/ca.crt" "$PG_DIR/server.crt"
  # The server refuses a key that others can read; it must be its user's.
  [ ${#PG_AS[@]} -eq 0 ] || chown postgres:postgres "$PG_DIR/server.key"
}

# The server's settings, rewritten at every start (they are this script's, not
# the cluster's: initdb's postgresql.conf only includes them).
postgres_config() {
  local host=$1 port=$2 listen=$1
  [ "$host" = 127.0.0.1 ] || listen="$host,127.0.0.1"
  cat >"$PG_DATA/tws.conf" <<EOF
listen_addresses = '$listen'
port = $port
unix_socket_directories = '$PG_SOCKET_DIR'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 64MB
password_encryption = scram-sha-256
ssl = on
ssl_cert_file = '$PG_DIR/server.crt'
ssl_key_file = '$PG_DIR/server.key'
fsync = on
synchronous_commit = on
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
EOF
  grep -qxF "include 'tws.conf'" "$PG_DATA/postgresql.conf" || echo "include 'tws.conf'" >>"$PG_DATA/postgresql.conf"
  cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# TYPE  DATABASE  USER      ADDRESS    METHOD
# The socket's directory is 0700: only the postgres OS user (and root) get here.
local   all       postgres             trust
host    all       all       0.0.0.0/0  scram-sha-256
host    all       all       ::/0       scram-sha-256
EOF
  [ ${#PG_AS[@]} -eq 0 ] || chown postgres:postgres "$PG_DATA/tws.conf" "$PG_DATA/pg_hba.conf"
}

postgres_ready() { "$1/pg_isready" -q -h "$POSTGRES_HOST" -p "$POSTGRES_PORT"; }

# Starts the server unless it runs; returns once it accepts connections and the
# superuser's password is set. Sets POSTGRES_HOST and POSTGRES_PORT.
postgres_up() {
  local bin pw pid
  bin=$(postgres_bin_dir) || exit 1
  if [ ${#PG_AS[@]} -gt 0 ]; then
    id -u postgres >/dev/null 2>&1 || die "missing the postgres system user (Debian's postgresql-common creates it: apt-get install postgresql-15)"
    require_tool setpriv "util-linux's setpriv runs PostgreSQL as the postgres user"
  fi
  require_tool openssl "openssl generates PostgreSQL's certificates"
  mkdir -p "$PG_DIR" "$PG_SOCKET_DIR" "$TWS_ENV_DIR/logs" "$TWS_ENV_DIR/pids"
  chmod 0755 "$PG_DIR"
  chmod 0700 "$PG_SOCKET_DIR"
  [ ${#PG_AS[@]} -eq 0 ] || chown postgres:postgres "$PG_DIR" "$PG_SOCKET_DIR"
  as_postgres test -w "$PG_DIR" ||
    die "the postgres user cannot write $PG_DIR (every directory above it must be searchable by others)"

  if [ ! -f "$PG_ENV_FILE" ]; then
    : "${ENV_HOST:?postgres_up needs ENV_HOST, the address to listen on}"
    printf 'POSTGRES_HOST=%s\nPOSTGRES_PORT=%s\n' "$ENV_HOST" "$(free_ports 1)" >"$PG_ENV_FILE"
  fi
  # shellcheck source=/dev/null # written above
  source "$PG_ENV_FILE"

  if is_running postgres; then
    wait_for postgres 60 postgres_ready "$bin"
    return 0
  fi

  if [ ! -f "$PG_PASSWORD_FILE" ]; then
    (umask 077 && openssl rand -hex 24 >"$PG_PASSWORD_FILE") || die "writing $PG_PASSWORD_FILE failed"
  fi
  postgres_tls "$POSTGRES_HOST"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "initializing PostgreSQL $("$bin/postgres" --version | awk '{print $3}') in $PG_DATA"
    rm -rf "$PG_DATA"
    # --no-sync: a fresh, empty cluster; only an OS crash could lose it, and
    # that ends the environment anyway.
    as_postgres "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C --no-sync >"$(log_file postgres-initdb)" 2>&1 ||
      die "initdb failed; see $(log_file postgres-initdb)"
  fi
  postgres_config "$POSTGRES_HOST" "$POSTGRES_PORT"
  # A lock file left by a server that is gone (killed, or the machine
  # restarted): if its PID now belongs to another process, the server takes
  # that for itself still running and refuses to start. One that names a live
  # server of this data dir (our PID file was lost) means it runs: adopt it.
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    pid=$(head -n 1 "$PG_DATA/postmaster.pid")
    if [ -n "$pid" ] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$PG_DATA"; then
      echo "$pid" >"$(pid_file postgres)"
      wait_for postgres 60 postgres_ready "$bin"
      return 0
    fi
    rm -f "$PG_DATA/postmaster.pid"
  fi
  # start_daemon truncates the log: keep what an earlier run (before a
  # restart) wrote.
  [ -s "$(log_file postgres)" ] && cat "$(log_file postgres)" >>"$(log_file postgres-earlier)"
  log "starting PostgreSQL on $POSTGRES_HOST:$POSTGRES_PORT"
  # From its own directory: it resolves its binary's path from the current one.
  (cd "$PG_DIR" && start_daemon postgres "${PG_AS[@]}" "$bin/postgres" -D "$PG_DATA")
  wait_for postgres 60 postgres_ready "$bin"
  pw=$(cat "$PG_PASSWORD_FILE")
  # On stdin, not the command line, where `ps` would show the password.
  printf "ALTER ROLE postgres PASSWORD '%s';\n" "$pw" |
    as_postgres "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$POSTGRES_PORT" -U postgres -d postgres >/dev/null ||
    die "setting the PostgreSQL superuser's password failed; see $(log_file postgres)"
}

# Stops the server with pg_ctl (`fast` or `immediate`) and returns once its
# process is gone.
postgres_stop() {
  local mode=$1 bin
  bin=$(postgres_bin_dir) || exit 1
  is_running postgres || die "PostgreSQL is not running here (start the environment with tests/env/up)"
  as_postgres "$bin/pg_ctl" -D "$PG_DATA" stop -m "$mode" -w -t 60 >/dev/null ||
    die "pg_ctl stop -m $mode failed; see $(log_file postgres)"
  # pg_ctl returns when the lock file is gone; the process may still be exiting.
  for _ in $(seq 1 300); do
    has_exited postgres && return 0
    sleep 0.1
  done
  die "PostgreSQL's process did not exit 30 s after pg_ctl stop"
}

# For tests/env/down: SIGINT is PostgreSQL's fast shutdown. The SIGTERM that
# stop_daemon sends is its smart shutdown, which waits for every client to
# disconnect, and it reaches only the server: each backend is in a session of
# its own.
postgres_down() {
  if is_running postgres; then kill -INT "$(cat "$(pid_file postgres)")" 2>/dev/null || true; fi
  stop_daemon postgres
}

# The export lines for `up`.
postgres_exports() {
  local bin
  bin=$(postgres_bin_dir) || exit 1
  # shellcheck source=/dev/null # written by postgres_up
  source "$PG_ENV_FILE"
  cat <<EOF
export POSTGRES_HOST='$POSTGRES_HOST'
export POSTGRES_PORT='$POSTGRES_PORT'
export POSTGRES_CA='$PG_DIR/ca.crt'
export POSTGRES_SUPERUSER_URL='postgres://postgres:$(cat "$PG_PASSWORD_FILE")@$POSTGRES_HOST:$POSTGRES_PORT/postgres'
export TWS_PG_BIN='$bin'
EOF
}
