//! Why the brokers refused a client, named the same way by every worker and
//! the operator: the first-contact problems a user has to fix (a password, a
//! certificate, a CA, an ACL), told apart from a broker that is down.
//!
//! librdkafka never fails a call because of a refused login: it reports the
//! refusal to the client's error callback and reconnects, and the call waits
//! out its timeout. An ACL denial does come back from the call, as a topic's,
//! a group's or a transactional id's authorization error. Both end up here.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What the brokers refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// SASL: the user name, password or token was refused.
    Authentication { detail: String },
    /// TLS: the brokers do not accept this client's certificate.
    ClientCertificate { detail: String },
    /// TLS: this client does not trust the brokers' certificate.
    BrokerCertificate { detail: String },
    /// TLS: the handshake failed for another reason (a plaintext listener,
    /// a protocol mismatch).
    Tls { detail: String },
    /// An ACL: the principal may not do `operation` on the resource.
    Authorization {
        operation: &'static str,
        resource: Resource,
    },
}

/// A Kafka resource an ACL names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Topic(String),
    Group(String),
    TransactionalId(String),
    Cluster,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Topic(t) => write!(f, "topic '{t}'"),
            Resource::Group(g) => write!(f, "group '{g}'"),
            Resource::TransactionalId(id) => write!(f, "transactional id '{id}'"),
            Resource::Cluster => write!(f, "the cluster"),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Authentication { detail } => write!(
                f,
                "authentication failed: the SASL user name, password or token was refused ({detail})"
            ),
            Refusal::ClientCertificate { detail } => write!(
                f,
                "TLS trust failed: the brokers do not accept this client's certificate (signed by a CA they do not trust, expired, or none given) ({detail})"
            ),
            Refusal::BrokerCertificate { detail } => write!(
                f,
                "TLS trust failed: this client does not trust the brokers' certificate (the CA it was given did not sign them) ({detail})"
            ),
            Refusal::Tls { detail } => write!(
                f,
                "TLS failed: the handshake with the brokers did not complete (is this a TLS listener?) ({detail})"
            ),
            Refusal::Authorization {
                operation,
                resource,
            } => write!(
                f,
                "authorization failed: this principal may not {operation} {resource} (a missing Kafka ACL; docs/kafka.md lists what each component needs)"
            ),
        }
    }
}

impl Refusal {
    /// The reason, for conditions, Events and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Authentication { .. } => "KafkaAuthentication",
            Refusal::ClientCertificate { .. }
            | Refusal::BrokerCertificate { .. }
            | Refusal::Tls { .. } => "KafkaTls",
            Refusal::Authorization { .. } => "KafkaAuthorization",
        }
    }

    /// Whether this is a refused login (as opposed to a denied operation).
    pub fn is_login(&self) -> bool {
        !matches!(self, Refusal::Authorization { .. })
    }

    /// A client error callback's report, when it is a refused login rather
    /// than a broker that is down. Measured on Kafka 4.1.1: a wrong SCRAM or
    /// PLAIN password and an unknown user come as `_AUTHENTICATION`; a client
    /// certificate of another CA or an expired one as a transport failure
    /// naming the brokers' alert ("ssl/tls alert bad certificate"); brokers
    /// whose CA the client was not given as `_SSL` with "certificate verify
    /// failed". A broker that is down never mentions any of these.
    pub fn of_client_error(error: &KafkaError, reason: &str) -> Option<Refusal> {
        let detail = || reason.to_owned();
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::Authentication) {
            return Some(Refusal::Authentication { detail: detail() });
        }
        if reason.contains("certificate verify failed") {
            return Some(Refusal::BrokerCertificate { detail: detail() });
        }
        if reason.contains("ssl/tls alert") {
            return Some(Refusal::ClientCertificate { detail: detail() });
        }
        if code == Some(RDKafkaErrorCode::SSL) || reason.contains("SSL handshake failed") {
            return Some(Refusal::Tls { detail: detail() });
        }
        None
    }

    /// A librdkafka log line of a refused connection (facility FAIL), by
    /// its text: the log callback runs on librdkafka's own threads, so it
    /// is heard even from a client nothing polls, whose error events wait
    /// in a queue (a consumer's metadata client missed "certificate verify
    /// failed" for 90 s that way, 1 run in 2).
    pub fn of_log(facility: &str, message: &str) -> Option<Refusal> {
        if facility != "FAIL" {
            return None;
        }
        let detail = || message.to_owned();
        if message.contains("SASL authentication error") {
            return Some(Refusal::Authentication { detail: detail() });
        }
        if message.contains("certificate verify failed") {
            return Some(Refusal::BrokerCertificate { detail: detail() });
        }
        if message.contains("ssl/tls alert") {
            return Some(Refusal::ClientCertificate { detail: detail() });
        }
        if message.contains("SSL handshake failed") {
            return Some(Refusal::Tls { detail: detail() });
        }
        None
    }

    /// An authorization error code, for the operation the caller attempted
    /// on `resource`; `None` for any other code.
    pub fn denied(
        code: RDKafkaErrorCode,
        operation: &'static str,
        resource: Resource,
    ) -> Option<Refusal> {
        let resource = match code {
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed => resource,
            RDKafkaErrorCode::ClusterAuthorizationFailed => Resource::Cluster,
            _ => return None,
        };
        Some(Refusal::Authorization {
            operation,
            resource,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refused_login_is_named_and_a_broker_down_is_not() {
        let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        let bad_cert = "ssl://127.0.0.1:1/bootstrap: Receive failed: ssl/record/rec_layer_s3.c:918:ssl3_read_bytes error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL alert number 42";
        assert!(matches!(
            Refusal::of_client_error(&transport, bad_cert),
            Some(Refusal::ClientCertificate { .. })
        ));
        let sasl = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let r = Refusal::of_client_error(&sasl, "SASL authentication error: Authentication failed");
        assert_eq!(r.as_ref().map(Refusal::reason), Some("KafkaAuthentication"));
        let ssl = KafkaError::Global(RDKafkaErrorCode::SSL);
        let verify = "ssl://127.0.0.1:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified";
        assert!(matches!(
            Refusal::of_client_error(&ssl, verify),
            Some(Refusal::BrokerCertificate { .. })
        ));
        assert!(matches!(
            Refusal::of_client_error(&ssl, "SSL handshake failed: wrong version number"),
            Some(Refusal::Tls { .. })
        ));
        let refused =
            "ssl://127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused";
        assert_eq!(Refusal::of_client_error(&transport, refused), None);
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        assert_eq!(
            Refusal::of_client_error(&down, "1/1 brokers are down"),
            None
        );
    }

    #[test]
    fn refused_connections_are_named_from_the_log_and_a_broker_down_is_not() {
        let verify = "ssl://127.0.0.1:1/bootstrap: SSL handshake failed: ssl/statem/statem_clnt.c:2125:tls_post_process_server_certificate error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified";
        assert!(matches!(
            Refusal::of_log("FAIL", verify),
            Some(Refusal::BrokerCertificate { .. })
        ));
        let sasl = "sasl_ssl://127.0.0.1:1/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512";
        assert!(matches!(
            Refusal::of_log("FAIL", sasl),
            Some(Refusal::Authentication { .. })
        ));
        let down =
            "ssl://127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused";
        assert_eq!(Refusal::of_log("FAIL", down), None);
        assert_eq!(Refusal::of_log("SSL", verify), None);
    }

    #[test]
    fn a_denial_names_the_operation_and_the_resource() {
        let r = Refusal::denied(
            RDKafkaErrorCode::TopicAuthorizationFailed,
            "DESCRIBE",
            Resource::Topic("tweets".into()),
        )
        .unwrap();
        assert_eq!(r.reason(), "KafkaAuthorization");
        assert!(!r.is_login());
        assert!(
            r.to_string()
                .contains("may not DESCRIBE topic 'tweets' (a missing Kafka ACL"),
            "{r}"
        );
        let cluster = Refusal::denied(
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            "CREATE",
            Resource::Topic("t".into()),
        )
        .unwrap();
        assert!(cluster.to_string().contains("may not CREATE the cluster"));
        assert_eq!(
            Refusal::denied(
                RDKafkaErrorCode::UnknownTopicOrPartition,
                "DESCRIBE",
                Resource::Topic("t".into())
            ),
            None
        );
    }
}
