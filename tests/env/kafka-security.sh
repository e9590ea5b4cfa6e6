# shellcheck shell=bash
# Sourced by tests/env/up: the material of the secured Kafka listeners.
#
# Every broker also listens with
#   SASL_SSL        SCRAM-SHA-256, SCRAM-SHA-512, PLAIN and OAUTHBEARER over TLS
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
#   oauth/signing.key            the RSA key an OIDC token endpoint signs tokens with
#   oauth/jwks.json              its public half, which the brokers trust (kid tws-oauth)
#   oauth/issuer, audience       the `iss` and `aud` the brokers require
#   oauth/client_id, client_secret   an OAuth client (OAUTHBEARER over SASL_SSL)
# There is no identity provider here: the tests serve the token endpoint
# themselves (tests/support/oauth.rs), signing with oauth/signing.key, and the
# brokers validate those tokens for real against oauth/jwks.json.

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
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" -subj "/CN=twitterstream test CA" \
        -keyout ca.key -out ca.crt
      # The broker's certificate names the address the clients dial.
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr
      printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:localhost\n' "$KAFKA_HOST" >broker.ext
      openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
        -extfile broker.ext -out broker.crt
      # Kafka's PEM key store: an unencrypted PKCS#8 key, then the chain.
      openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker.p8
      cat broker.p8 broker.crt ca.crt >broker.pem
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=twsmtls" -keyout client.key -out client.csr
      openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -out client.crt
      # A client of another CA, which the brokers do not trust.
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" -subj "/CN=tws-untrusted" \
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
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=tws-expired" -keyout expired.key -out expired.csr
      openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr -out expired.crt \
        -startdate 20200101000000Z -enddate 20200102000000Z -notext
    } >"$err" 2>&1 || { tail -n 20 "$err" >&2; exit 1; }
  ) || die "generating the Kafka TLS material failed; see $dir/openssl.log"
  kafka_oauth_material "$dir/oauth"
  local user
  for user in twsscram twsplain; do
    mkdir -p "$dir/users/$user"
    printf '%s' "$user" >"$dir/users/$user/username"
    random_token >"$dir/users/$user/password"
  done
}

# An OIDC signing key, the JWKS the brokers trust, and an OAuth client, in $1.
kafka_oauth_material() {
  local dir=$1
  mkdir -p "$dir"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/signing.key" 2>"$dir/openssl.log" ||
    die "generating the OAuth signing key failed; see $dir/openssl.log"
  local modulus
  modulus=$(openssl rsa -in "$dir/signing.key" -noout -modulus 2>>"$dir/openssl.log" | cut -d= -f2) ||
    die "reading the OAuth signing key failed; see $dir/openssl.log"
  # A JWK: the modulus and the exponent (65537: AQAB), base64url without
  # padding.
  local n
  n=$(printf '%s' "$modulus" | basenc --base16 -d | basenc --base64url -w0 | tr -d '=')
  printf '{"keys": [{"kty": "RSA", "kid": "tws-oauth", "use": "sig", "alg": "RS256", "n": "%s", "e": "AQAB"}]}\n' \
    "$n" >"$dir/jwks.json"
  printf 'twitterstream-test-issuer' >"$dir/issuer"
  printf 'twitterstream-kafka' >"$dir/audience"
  printf 'twsoauth' >"$dir/client_id"
  random_token >"$dir/client_secret"
}

# The JVM flag that lets the brokers read the JWKS file (Kafka 4 reads no
# OAuth URL that is not allowed explicitly).
kafka_oauth_jvm_flag() {
  printf -- '-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls=file://%s\n' "$1/oauth/jwks.json"
}

# The extra `kafka.tools.StorageTool format` arguments: the SCRAM users.
kafka_scram_format_args() {
  local dir=$1 pass
  pass=$(cat "$dir/users/twsscram/password")
  printf '%s\n' \
    --add-scram "SCRAM-SHA-256=[name=twsscram,password=$pass]" \
    --add-scram "SCRAM-SHA-512=[name=twsscram,password=$pass]"
}

# The server.properties lines of the secured listeners. The JWT validator is
# named because Kafka 4.1.1's default (DefaultJwtValidator, built without a
# key resolver by OAuthBearerValidatorCallbackHandler) falls back to the
# client-side validator, which checks no signature: with it the brokers
# accepted a token signed by a key they never saw
# (bad_credentials_end_with_the_reason_and_no_secret, case
# oauth-untrusted-token). SASL_SSL clients log in again every 15 s (KIP-368),
# as brokers that expire sessions make them: a rotated password is then
# refused on connections that are already open
# (rotated_credentials_are_taken_up_without_a_restart).
# Listener names
# SASLSSL, SASLPLAIN, MTLS and TLS; their ports are in the `listeners` line.
# ACLs are enforced (StandardAuthorizer): a resource no ACL names is open to
# every principal, so only the ACL tests' resources, which an ACL names, are
# deny-by-default; PLAINTEXT clients, the brokers and the controllers
# (User:ANONYMOUS) are super users.
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
listener.name.saslssl.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN,OAUTHBEARER
listener.name.saslssl.connections.max.reauth.ms=15000
listener.name.saslssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.saslssl.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler
sasl.oauthbearer.jwks.endpoint.url=file://$dir/oauth/jwks.json
sasl.oauthbearer.jwt.validator.class=org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator
sasl.oauthbearer.expected.issuer=$(cat "$dir/oauth/issuer")
sasl.oauthbearer.expected.audience=$(cat "$dir/oauth/audience")
listener.name.saslssl.scram-sha-256.sasl.jaas.config=$jaas_scram
listener.name.saslssl.scram-sha-512.sasl.jaas.config=$jaas_scram
listener.name.saslssl.plain.sasl.jaas.config=$jaas_plain
listener.name.saslplain.sasl.enabled.mechanisms=PLAIN
listener.name.saslplain.plain.sasl.jaas.config=$jaas_plain
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
super.users=User:ANONYMOUS
EOF
}
