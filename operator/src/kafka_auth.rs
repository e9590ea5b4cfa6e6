//! How a pipeline's pods reach a secured Kafka: the Secret and ConfigMap
//! volumes `spec.kafka.tls` and `spec.kafka.sasl` name, and the workers'
//! security flags pointing at the mounted files. The operator only names
//! the Secrets; the kubelet mounts them (and refreshes the files when they
//! are rotated, which the workers' next clients read).

use crate::crd::{KafkaSpec, KeyRef};
use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, SecretVolumeSource, Volume, VolumeMount};
use twitterstream_contract::kafka::{KafkaSecurity, SecurityProtocol};

/// Where the Kafka material is mounted in the workers' containers.
const KAFKA_DIR: &str = "/var/run/secrets/twitterstream.io/kafka";

/// What both components' pods need for the stream's Kafka.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct KafkaAuth {
    pub(crate) security: KafkaSecurity,
    pub(crate) volumes: Vec<Volume>,
    pub(crate) mounts: Vec<VolumeMount>,
}

impl KafkaAuth {
    fn mount_secret(&mut self, name: &str, secret: &str) -> String {
        self.volumes.push(Volume {
            name: name.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_owned()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        self.mount(name)
    }

    fn mount_key_ref(&mut self, name: &str, r: &KeyRef) -> String {
        match (&r.secret, &r.config_map) {
            (Some(secret), _) => self.mount_secret(name, secret),
            (None, Some(config_map)) => {
                self.volumes.push(Volume {
                    name: name.to_owned(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: config_map.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                self.mount(name)
            }
            // The CRD requires exactly one of the two.
            (None, None) => format!("{KAFKA_DIR}/{name}"),
        }
    }

    fn mount(&mut self, name: &str) -> String {
        let path = format!("{KAFKA_DIR}/{name}");
        self.mounts.push(VolumeMount {
            name: name.to_owned(),
            mount_path: path.clone(),
            read_only: Some(true),
            ..Default::default()
        });
        path
    }
}

/// The volumes, mounts and flags `spec.kafka` asks for.
pub(crate) fn kafka_auth(k: &KafkaSpec) -> KafkaAuth {
    let mut auth = KafkaAuth::default();
    let mut security = KafkaSecurity {
        kafka_security_protocol: match (&k.tls, &k.sasl) {
            (None, None) => SecurityProtocol::Plaintext,
            (Some(_), None) => SecurityProtocol::Ssl,
            (None, Some(_)) => SecurityProtocol::SaslPlaintext,
            (Some(_), Some(_)) => SecurityProtocol::SaslSsl,
        },
        ..KafkaSecurity::default()
    };
    if let Some(tls) = &k.tls {
        if let Some(ca) = &tls.ca {
            let dir = auth.mount_key_ref("kafka-ca", ca);
            security.kafka_ca_file = Some(format!("{dir}/{}", ca.key).into());
        }
        if let Some(cert) = &tls.client_certificate {
            let dir = auth.mount_secret("kafka-client-certificate", &cert.secret);
            security.kafka_cert_file = Some(format!("{dir}/{}", cert.cert_key).into());
            security.kafka_key_file = Some(format!("{dir}/{}", cert.key_key).into());
        }
        security.kafka_skip_hostname_verification = tls.skip_hostname_verification;
    }
    if let Some(sasl) = &k.sasl {
        let dir = auth.mount_secret("kafka-sasl", &sasl.secret);
        security.kafka_sasl_mechanism = Some(sasl.mechanism);
        security.kafka_sasl_username = sasl.username.clone();
        security.kafka_sasl_username_file = sasl
            .username_key
            .as_ref()
            .map(|key| format!("{dir}/{key}").into());
        security.kafka_sasl_password_file = Some(format!("{dir}/{}", sasl.password_key).into());
        if let Some(oauth) = &sasl.oauth {
            security.kafka_oauth_token_endpoint = Some(oauth.token_endpoint.clone());
            security.kafka_oauth_scope = oauth.scope.clone();
            if let Some(ca) = &oauth.ca {
                let dir = auth.mount_key_ref("kafka-oauth-ca", ca);
                security.kafka_oauth_ca_file = Some(format!("{dir}/{}", ca.key).into());
            }
        }
    }
    auth.security = security;
    auth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClientCertificate, KafkaOauth, KafkaSasl, KafkaTls};
    use twitterstream_contract::kafka::SaslMechanism;

    fn kafka(tls: Option<KafkaTls>, sasl: Option<KafkaSasl>) -> KafkaSpec {
        let mut k: KafkaSpec = serde_json::from_value(serde_json::json!({
            "brokers": ["kafka:9093"], "topic": "t"
        }))
        .expect("spec");
        k.tls = tls;
        k.sasl = sasl;
        k
    }

    #[test]
    fn plaintext_mounts_nothing() {
        assert_eq!(kafka_auth(&kafka(None, None)), KafkaAuth::default());
    }

    #[test]
    fn scram_over_tls_mounts_the_named_secrets_and_points_the_flags_at_their_keys() {
        let auth = kafka_auth(&kafka(
            Some(KafkaTls {
                ca: Some(KeyRef {
                    secret: Some("cluster-ca".into()),
                    config_map: None,
                    key: "ca.crt".into(),
                }),
                ..KafkaTls::default()
            }),
            Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha512,
                secret: "user".into(),
                username: Some("app".into()),
                username_key: None,
                password_key: "password".into(),
                oauth: None,
            }),
        ));
        let s = &auth.security;
        assert_eq!(s.kafka_security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            s.kafka_ca_file.as_deref(),
            Some(std::path::Path::new(&format!(
                "{KAFKA_DIR}/kafka-ca/ca.crt"
            )))
        );
        assert_eq!(s.kafka_sasl_username.as_deref(), Some("app"));
        assert_eq!(
            s.kafka_sasl_password_file.as_deref(),
            Some(std::path::Path::new(&format!(
                "{KAFKA_DIR}/kafka-sasl/password"
            )))
        );
        let secrets: Vec<_> = auth
            .volumes
            .iter()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .collect();
        assert_eq!(secrets, ["cluster-ca", "user"]);
        assert!(auth.mounts.iter().all(|m| m.read_only == Some(true)));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn mutual_tls_takes_the_ca_from_a_config_map_and_the_certificate_from_a_secret() {
        let auth = kafka_auth(&kafka(
            Some(KafkaTls {
                ca: Some(KeyRef {
                    secret: None,
                    config_map: Some("kafka-ca".into()),
                    key: "ca.crt".into(),
                }),
                client_certificate: Some(ClientCertificate {
                    secret: "client".into(),
                    cert_key: "user.crt".into(),
                    key_key: "user.key".into(),
                }),
                skip_hostname_verification: false,
            }),
            None,
        ));
        let s = &auth.security;
        assert_eq!(s.kafka_security_protocol, SecurityProtocol::Ssl);
        assert!(auth.volumes[0].config_map.is_some());
        assert!(
            s.kafka_cert_file
                .as_ref()
                .is_some_and(|p| p.ends_with("kafka-client-certificate/user.crt"))
        );
        assert!(
            s.kafka_key_file
                .as_ref()
                .is_some_and(|p| p.ends_with("user.key"))
        );
        assert!(s.validate().is_ok());
    }

    #[test]
    fn oauthbearer_points_the_flags_at_the_client_and_the_token_endpoint() {
        let auth = kafka_auth(&kafka(
            Some(KafkaTls::default()),
            Some(KafkaSasl {
                mechanism: SaslMechanism::OauthBearer,
                secret: "oauth-client".into(),
                username: None,
                username_key: Some("clientId".into()),
                password_key: "clientSecret".into(),
                oauth: Some(KafkaOauth {
                    token_endpoint: "https://idp.example/token".into(),
                    scope: Some("kafka".into()),
                    ca: Some(KeyRef {
                        secret: None,
                        config_map: Some("idp-ca".into()),
                        key: "ca.crt".into(),
                    }),
                }),
            }),
        ));
        let s = &auth.security;
        assert_eq!(s.kafka_sasl_mechanism, Some(SaslMechanism::OauthBearer));
        assert!(
            s.kafka_sasl_username_file
                .as_ref()
                .is_some_and(|p| p.ends_with("kafka-sasl/clientId"))
        );
        assert!(
            s.kafka_sasl_password_file
                .as_ref()
                .is_some_and(|p| p.ends_with("kafka-sasl/clientSecret"))
        );
        assert_eq!(
            s.kafka_oauth_token_endpoint.as_deref(),
            Some("https://idp.example/token")
        );
        assert_eq!(s.kafka_oauth_scope.as_deref(), Some("kafka"));
        assert!(
            s.kafka_oauth_ca_file
                .as_ref()
                .is_some_and(|p| p.ends_with("kafka-oauth-ca/ca.crt"))
        );
        assert!(
            auth.volumes
                .iter()
                .any(|v| v.config_map.as_ref().is_some_and(|c| c.name == "idp-ca"))
        );
        assert!(s.validate().is_ok(), "{:?}", s.validate());
    }
}
