# shellcheck shell=bash
# Sourced by tests/env/up: the material of the secured Kafka listeners.
#
# Every broker also listens with
#   SASL_SSL        SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN over TLS
#   SASL_PLAINTEXT  PLAIN
#   SSL             TLS with client certificates required (mTLS)
#   SSL             TLS, server authentication only
# with a CA, broker and client certificates generated here by openssl, and
# users whose passwords are generated here too. Tests read them from
# $KAFKA_SECURITY_DIR:
#   tls/ca.crt                   the CA of the brokers and of the clients
#   tls/client.crt, client.key   a client certificate (CN=twsmtls)
#   tls/untrusted.crt, .key      a client certificate of another CA
#   tls/expired.crt, .key        a client certificate of the CA, expired
#   users/<user>/username, password   twsscram (SCRAM-SHA-256 and -512), twsplain (PLAIN)

# Writes the TLS material and the users into $1 (a new directory).
kafka_security_material() {
  local dir=$1
  command -v openssl >/dev/null ||
    die "openssl is missing: the secured Kafka listeners need it (Debian package openssl)"
  mkdir -p "$dir/tls" "$dir/users"
  local tls=$dir/tls
  (
    cd "$tls" || exit 1
    local days=30 err=$dir/openssl.log
    {
      openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=twitterstream test CA" \
        -keyout ca.key -out ca.crt
      # The broker's certificate names the loopback address the clients dial.
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >broker.ext
      openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
        -extfile broker.ext -out broker.crt
      # Kafka's PEM key store: an unencrypted PKCS#8 key, then the chain.
      openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker.p8
      cat broker.p8 broker.crt ca.crt >broker.pem
      openssl req -newkey rsa:2048 -nodes -subj "/CN=twsmtls" -keyout client.key -out client.csr
      openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -out client.crt
      # A client of another CA, which the brokers do not trust.
      openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=tws-untrusted" \
        -keyout untrusted.key -out untrusted.crt
      # A client certificate of the right CA whose validity ended in 2020.
      mkdir -p ca-db && : >ca-db/index.txt && echo 01 >ca-db/serial
      cat >ca.cnf <<EOF
[ca]
default_ca = test
[test]
dir = ca-db
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
default_md = sha256
policy = any
[any]
commonName = supplied
EOF
      openssl req -newkey rsa:2048 -nodes -subj "/CN=tws-expired" -keyout expired.key -out expired.csr
      openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr -out expired.crt \
        -startdate 20200101000000Z -enddate 20200102000000Z -notext
    } >"$err" 2>&1 || { tail -n 20 "$err" >&2; exit 1; }
  ) || die "generating the Kafka TLS material failed; see $dir/openssl.log"
  local user
  for user in twsscram twsplain; do
    mkdir -p "$dir/users/$user"
    printf '%s' "$user" >"$dir/users/$user/username"
    python3 -c 'import secrets;print(secrets.token_urlsafe(18),end="")' >"$dir/users/$user/password"
  done
}

# The extra `kafka.tools.StorageTool format` arguments: the SCRAM users.
kafka_scram_format_args() {
  local dir=$1 pass
  pass=$(cat "$dir/users/twsscram/password")
  printf '%s\n' \
    --add-scram "SCRAM-SHA-256=[name=twsscram,password=$pass]" \
    --add-scram "SCRAM-SHA-512=[name=twsscram,password=$pass]"
}

# The server.properties lines of the secured listeners (listener names
# SASLSSL, SASLPLAIN and MTLS; their ports are in the `listeners` line).
kafka_security_properties() {
  local dir=$1 plain
  plain=$(cat "$dir/users/twsplain/password")
  local jaas_plain="org.apache.kafka.common.security.plain.PlainLoginModule required user_twsplain=\"$plain\";"
  local jaas_scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"
  cat <<EOF
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.crt
listener.name.mtls.ssl.client.auth=required
listener.name.tls.ssl.client.auth=none
listener.name.saslssl.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.saslssl.scram-sha-256.sasl.jaas.config=$jaas_scram
listener.name.saslssl.scram-sha-512.sasl.jaas.config=$jaas_scram
listener.name.saslssl.plain.sasl.jaas.config=$jaas_plain
listener.name.saslplain.sasl.enabled.mechanisms=PLAIN
listener.name.saslplain.plain.sasl.jaas.config=$jaas_plain
EOF
}
