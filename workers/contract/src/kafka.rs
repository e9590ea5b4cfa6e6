//! How a Kafka client of this project connects: the security protocol, TLS
//! files and SASL credentials, shared by the workers' every client (producer,
//! resume reader, consumer stages) and by the operator's topic admin.
//!
//! Secrets are never flags' values: the flags name files (a mounted Secret),
//! read when a client is created, so a rotated Secret reaches the next
//! client (librdkafka reads TLS files and SASL credentials only then).

use serde::Serialize;
use std::path::{Path, PathBuf};

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// librdkafka's `sasl.mechanism`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    clap::ValueEnum,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    #[serde(rename = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[value(name = "OAUTHBEARER")]
    #[serde(rename = "OAUTHBEARER")]
    OauthBearer,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OauthBearer => "OAUTHBEARER",
        }
    }
}

/// Where a client's Kafka credentials are: flags of every binary that
/// talks to Kafka.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
pub struct KafkaSecurity {
    /// Kafka security protocol.
    #[arg(long, env = "TWS_KAFKA_SECURITY_PROTOCOL", value_enum, default_value_t = SecurityProtocol::Plaintext)]
    pub kafka_security_protocol: SecurityProtocol,
    /// PEM file of the CAs that sign the brokers' certificates (default: the
    /// system's trust store).
    #[arg(long, env = "TWS_KAFKA_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS.
    #[arg(long, env = "TWS_KAFKA_CERT_FILE", requires = "kafka_key_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "TWS_KAFKA_KEY_FILE", requires = "kafka_cert_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_key_file: Option<PathBuf>,
    /// Do not check that a broker's certificate names the host connected to
    /// (for brokers whose certificates name other hosts; the CA is still
    /// checked).
    #[arg(long, env = "TWS_KAFKA_SKIP_HOSTNAME_VERIFICATION")]
    pub kafka_skip_hostname_verification: bool,
    /// SASL mechanism (with the sasl-plaintext and sasl-ssl protocols).
    #[arg(long, env = "TWS_KAFKA_SASL_MECHANISM", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,
    /// The SASL username, when it is not in a file (it is not a secret).
    #[arg(
        long,
        env = "TWS_KAFKA_SASL_USERNAME",
        conflicts_with = "kafka_sasl_username_file"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_username: Option<String>,
    /// File holding the SASL username (PLAIN, SCRAM), or the OAuth client id
    /// (OAUTHBEARER).
    #[arg(long, env = "TWS_KAFKA_SASL_USERNAME_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_username_file: Option<PathBuf>,
    /// File holding the SASL password, or the OAuth client secret.
    #[arg(long, env = "TWS_KAFKA_SASL_PASSWORD_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// OAUTHBEARER: the OIDC token endpoint (client credentials grant).
    #[arg(long, env = "TWS_KAFKA_OAUTH_TOKEN_ENDPOINT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_oauth_token_endpoint: Option<String>,
    /// OAUTHBEARER: the scope to ask the token endpoint for.
    #[arg(long, env = "TWS_KAFKA_OAUTH_SCOPE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_oauth_scope: Option<String>,
    /// OAUTHBEARER: PEM file of the CAs that sign the token endpoint's
    /// certificate (default: the system's trust store).
    #[arg(long, env = "TWS_KAFKA_OAUTH_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_oauth_ca_file: Option<PathBuf>,
    /// Seconds the Kafka clients may fail to authenticate (wrong
    /// credentials, an untrusted or expired certificate) before the process
    /// exits with the reason, rather than retrying in silence.
    #[arg(long, env = "TWS_KAFKA_AUTH_GRACE_SECONDS", default_value_t = 60)]
    pub kafka_auth_grace_seconds: u64,
}

impl Default for KafkaSecurity {
    /// The flags' defaults: plaintext.
    fn default() -> Self {
        Self {
            kafka_security_protocol: SecurityProtocol::Plaintext,
            kafka_ca_file: None,
            kafka_cert_file: None,
            kafka_key_file: None,
            kafka_skip_hostname_verification: false,
            kafka_sasl_mechanism: None,
            kafka_sasl_username: None,
            kafka_sasl_username_file: None,
            kafka_sasl_password_file: None,
            kafka_oauth_token_endpoint: None,
            kafka_oauth_scope: None,
            kafka_oauth_ca_file: None,
            kafka_auth_grace_seconds: 60,
        }
    }
}

/// A security setting that cannot be turned into a client configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KafkaSecurityError {
    #[error("--kafka-security-protocol {0} needs --kafka-sasl-mechanism")]
    NoMechanism(&'static str),
    #[error("--kafka-sasl-mechanism needs --kafka-security-protocol sasl-plaintext or sasl-ssl")]
    MechanismWithoutSasl,
    #[error(
        "SASL {0} needs --kafka-sasl-username (or --kafka-sasl-username-file) and --kafka-sasl-password-file"
    )]
    NoCredentials(&'static str),
    #[error(
        "OAUTHBEARER needs --kafka-oauth-token-endpoint, the client id (--kafka-sasl-username or --kafka-sasl-username-file) and the client secret (--kafka-sasl-password-file)"
    )]
    OauthIncomplete,
    #[error(
        "--kafka-oauth-token-endpoint and --kafka-oauth-ca-file need --kafka-sasl-mechanism OAUTHBEARER"
    )]
    OauthWithoutOauthBearer,
    #[error("TLS files are set but --kafka-security-protocol {0} does not use TLS")]
    TlsWithoutTls(&'static str),
    /// The file's path only: never its contents.
    #[error("cannot read {what} from {path}: {reason}")]
    Unreadable {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{what} in {path} is empty")]
    Empty { what: &'static str, path: String },
}

fn read_secret(what: &'static str, path: &Path) -> Result<String, KafkaSecurityError> {
    let text = std::fs::read_to_string(path).map_err(|e| KafkaSecurityError::Unreadable {
        what,
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })?;
    // A Secret written with `echo` ends in a newline that is not part of it.
    let value = text.trim_end_matches(['\r', '\n']).to_owned();
    if value.is_empty() {
        return Err(KafkaSecurityError::Empty {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(value)
}

impl KafkaSecurity {
    /// Checks the combinations clap cannot express.
    pub fn validate(&self) -> Result<(), KafkaSecurityError> {
        let protocol = self.kafka_security_protocol;
        let name = protocol.as_librdkafka();
        match (protocol.uses_sasl(), self.kafka_sasl_mechanism) {
            (true, None) => return Err(KafkaSecurityError::NoMechanism(name)),
            (false, Some(_)) => return Err(KafkaSecurityError::MechanismWithoutSasl),
            (true, Some(SaslMechanism::OauthBearer)) => {
                if self.kafka_oauth_token_endpoint.is_none()
                    || (self.kafka_sasl_username_file.is_none()
                        && self.kafka_sasl_username.is_none())
                    || self.kafka_sasl_password_file.is_none()
                {
                    return Err(KafkaSecurityError::OauthIncomplete);
                }
            }
            (true, Some(m)) => {
                if (self.kafka_sasl_username_file.is_none() && self.kafka_sasl_username.is_none())
                    || self.kafka_sasl_password_file.is_none()
                {
                    return Err(KafkaSecurityError::NoCredentials(m.as_str()));
                }
            }
            (false, None) => {}
        }
        let oauth = self.kafka_oauth_token_endpoint.is_some() || self.kafka_oauth_ca_file.is_some();
        if oauth && self.kafka_sasl_mechanism != Some(SaslMechanism::OauthBearer) {
            return Err(KafkaSecurityError::OauthWithoutOauthBearer);
        }
        let tls_files = self.kafka_ca_file.is_some() || self.kafka_cert_file.is_some();
        if tls_files && !protocol.uses_tls() {
            return Err(KafkaSecurityError::TlsWithoutTls(name));
        }
        Ok(())
    }

    /// Every file these settings name: what a client reads when it is
    /// created.
    pub fn files(&self) -> Vec<&Path> {
        [
            &self.kafka_ca_file,
            &self.kafka_cert_file,
            &self.kafka_key_file,
            &self.kafka_sasl_username_file,
            &self.kafka_sasl_password_file,
            &self.kafka_oauth_ca_file,
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect()
    }

    /// The librdkafka properties for these settings, secrets read from their
    /// files now. Plaintext gives none (librdkafka's default).
    pub fn client_properties(&self) -> Result<Vec<(&'static str, String)>, KafkaSecurityError> {
        self.validate()?;
        let protocol = self.kafka_security_protocol;
        if protocol == SecurityProtocol::Plaintext {
            return Ok(Vec::new());
        }
        let mut p = vec![("security.protocol", protocol.as_librdkafka().to_owned())];
        if protocol.uses_tls() {
            if let Some(ca) = &self.kafka_ca_file {
                p.push(("ssl.ca.location", ca.display().to_string()));
            }
            if let (Some(cert), Some(key)) = (&self.kafka_cert_file, &self.kafka_key_file) {
                p.push(("ssl.certificate.location", cert.display().to_string()));
                p.push(("ssl.key.location", key.display().to_string()));
            }
            let verify = if self.kafka_skip_hostname_verification {
                "none"
            } else {
                "https"
            };
            p.push(("ssl.endpoint.identification.algorithm", verify.to_owned()));
        }
        if let Some(m) = self.kafka_sasl_mechanism {
            p.push(("sasl.mechanism", m.as_str().to_owned()));
            let user = self.kafka_sasl_username_file.as_deref();
            let pass = self.kafka_sasl_password_file.as_deref();
            match m {
                SaslMechanism::OauthBearer => {
                    p.push(("sasl.oauthbearer.method", "oidc".to_owned()));
                    if let Some(url) = &self.kafka_oauth_token_endpoint {
                        p.push(("sasl.oauthbearer.token.endpoint.url", url.clone()));
                    }
                    if let Some(id) = &self.kafka_sasl_username {
                        p.push(("sasl.oauthbearer.client.id", id.clone()));
                    } else if let Some(f) = user {
                        p.push((
                            "sasl.oauthbearer.client.id",
                            read_secret("the OAuth client id", f)?,
                        ));
                    }
                    if let Some(f) = pass {
                        p.push((
                            "sasl.oauthbearer.client.secret",
                            read_secret("the OAuth client secret", f)?,
                        ));
                    }
                    if let Some(scope) = &self.kafka_oauth_scope {
                        p.push(("sasl.oauthbearer.scope", scope.clone()));
                    }
                    if let Some(ca) = &self.kafka_oauth_ca_file {
                        p.push(("https.ca.location", ca.display().to_string()));
                    }
                }
                _ => {
                    if let Some(name) = &self.kafka_sasl_username {
                        p.push(("sasl.username", name.clone()));
                    } else if let Some(f) = user {
                        p.push(("sasl.username", read_secret("the SASL username", f)?));
                    }
                    if let Some(f) = pass {
                        p.push(("sasl.password", read_secret("the SASL password", f)?));
                    }
                }
            }
        }
        Ok(p)
    }
}

/// Whether a librdkafka property holds a secret (for logging a configuration).
pub fn is_secret_property(key: &str) -> bool {
    matches!(key, "sasl.password" | "sasl.oauthbearer.client.secret")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, user: &str, pass: &str) -> (PathBuf, PathBuf) {
        let (u, p) = (dir.join("username"), dir.join("password"));
        std::fs::write(&u, user).unwrap();
        std::fs::write(&p, pass).unwrap();
        (u, p)
    }

    fn property<'a>(props: &'a [(&'static str, String)], key: &str) -> Option<&'a str> {
        props
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tws-kafka-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn plaintext_sets_nothing() {
        assert_eq!(KafkaSecurity::default().client_properties(), Ok(vec![]));
    }

    #[test]
    fn scram_over_tls_reads_the_credentials_from_their_files() {
        let d = dir("scram");
        let (u, p) = files(&d, "alice\n", "s3cret\n");
        let s = KafkaSecurity {
            kafka_security_protocol: SecurityProtocol::SaslSsl,
            kafka_ca_file: Some(d.join("ca.crt")),
            kafka_sasl_mechanism: Some(SaslMechanism::ScramSha512),
            kafka_sasl_username_file: Some(u),
            kafka_sasl_password_file: Some(p),
            ..KafkaSecurity::default()
        };
        let props = s.client_properties().unwrap();
        let get = |k: &str| property(&props, k);
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("alice"));
        assert_eq!(get("sasl.password"), Some("s3cret"));
        assert_eq!(get("ssl.endpoint.identification.algorithm"), Some("https"));
        assert!(get("ssl.ca.location").is_some_and(|v| v.ends_with("ca.crt")));
    }

    #[test]
    fn inconsistent_settings_are_refused_before_any_connection() {
        let sasl = KafkaSecurity {
            kafka_security_protocol: SecurityProtocol::SaslPlaintext,
            ..KafkaSecurity::default()
        };
        assert_eq!(
            sasl.validate(),
            Err(KafkaSecurityError::NoMechanism("sasl_plaintext"))
        );
        let no_creds = KafkaSecurity {
            kafka_sasl_mechanism: Some(SaslMechanism::Plain),
            ..sasl.clone()
        };
        assert_eq!(
            no_creds.validate(),
            Err(KafkaSecurityError::NoCredentials("PLAIN"))
        );
        let tls_on_plaintext = KafkaSecurity {
            kafka_ca_file: Some("ca.crt".into()),
            ..KafkaSecurity::default()
        };
        assert_eq!(
            tls_on_plaintext.validate(),
            Err(KafkaSecurityError::TlsWithoutTls("plaintext"))
        );
    }

    #[test]
    fn oauthbearer_asks_librdkafka_for_oidc_with_the_client_from_files() {
        let d = dir("oauth");
        let (u, p) = files(&d, "pipeline-client\n", "client-s3cret\n");
        let s = KafkaSecurity {
            kafka_security_protocol: SecurityProtocol::SaslSsl,
            kafka_sasl_mechanism: Some(SaslMechanism::OauthBearer),
            kafka_sasl_username_file: Some(u),
            kafka_sasl_password_file: Some(p),
            kafka_oauth_token_endpoint: Some("https://idp.example/token".into()),
            kafka_oauth_scope: Some("kafka".into()),
            kafka_oauth_ca_file: Some(d.join("idp-ca.crt")),
            ..KafkaSecurity::default()
        };
        let props = s.client_properties().unwrap();
        let get = |k: &str| property(&props, k);
        assert_eq!(get("sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(get("sasl.oauthbearer.method"), Some("oidc"));
        assert_eq!(get("sasl.oauthbearer.client.id"), Some("pipeline-client"));
        assert_eq!(get("sasl.oauthbearer.client.secret"), Some("client-s3cret"));
        assert_eq!(
            get("sasl.oauthbearer.token.endpoint.url"),
            Some("https://idp.example/token")
        );
        assert_eq!(get("sasl.oauthbearer.scope"), Some("kafka"));
        assert!(get("https.ca.location").is_some_and(|v| v.ends_with("idp-ca.crt")));
        // Neither the SASL username nor password is set: librdkafka would
        // refuse them with OAUTHBEARER.
        assert_eq!(get("sasl.username"), None);
        assert_eq!(get("sasl.password"), None);
        // A literal client id works too.
        let literal = KafkaSecurity {
            kafka_sasl_username_file: None,
            kafka_sasl_username: Some("literal-client".into()),
            ..s.clone()
        };
        let props = literal.client_properties().unwrap();
        assert!(props.contains(&("sasl.oauthbearer.client.id", "literal-client".into())));
        // Without the endpoint, or the endpoint without OAUTHBEARER: refused.
        let no_endpoint = KafkaSecurity {
            kafka_oauth_token_endpoint: None,
            ..s.clone()
        };
        assert_eq!(
            no_endpoint.validate(),
            Err(KafkaSecurityError::OauthIncomplete)
        );
        let scram_with_endpoint = KafkaSecurity {
            kafka_sasl_mechanism: Some(SaslMechanism::ScramSha256),
            ..s
        };
        assert_eq!(
            scram_with_endpoint.validate(),
            Err(KafkaSecurityError::OauthWithoutOauthBearer)
        );
    }

    #[test]
    fn an_unreadable_or_empty_secret_names_its_file_but_never_its_contents() {
        let d = dir("bad");
        let (u, p) = files(&d, "alice", "\n");
        let mut s = KafkaSecurity {
            kafka_security_protocol: SecurityProtocol::SaslPlaintext,
            kafka_sasl_mechanism: Some(SaslMechanism::Plain),
            kafka_sasl_username_file: Some(u),
            kafka_sasl_password_file: Some(p.clone()),
            ..KafkaSecurity::default()
        };
        let e = s.client_properties().unwrap_err();
        assert_eq!(
            e,
            KafkaSecurityError::Empty {
                what: "the SASL password",
                path: p.display().to_string()
            }
        );
        s.kafka_sasl_password_file = Some(d.join("missing"));
        let e = s.client_properties().unwrap_err().to_string();
        assert!(e.contains("missing") && !e.contains("alice"), "{e}");
    }
}
