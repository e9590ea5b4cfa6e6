//! What the brokers said about the operator's own login.
//!
//! librdkafka never fails a request because the brokers refused the login (a
//! wrong password, an untrusted certificate): it reports the refusal to the
//! client's error callback and reconnects, and the request only times out
//! (measured on Kafka 4.1.1: a metadata request under a wrong SCRAM password
//! ends in `BrokerTransportFailure` after `--kafka-timeout-seconds`). The
//! metadata client's context keeps the last refusal, so a timed-out lookup
//! can say that the brokers answered and refused, not that they are down.

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use std::sync::{Arc, Mutex};
use twitterstream_contract::refusal::Refusal;

/// The context of the operator's metadata clients: client errors are
/// logged, and login refusals kept until the next answered request.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoginWatch {
    refusal: Arc<Mutex<Option<String>>>,
}

impl LoginWatch {
    /// The brokers' reason, when they refused the login since the last
    /// answered request.
    pub(crate) fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A request was answered: the login works.
    pub(crate) fn answered(&self) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn refused(&self, refusal: &Refusal) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal.to_string());
    }
}

impl ClientContext for LoginWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(refusal) = Refusal::of_client_error(&error, reason) {
            self.refused(&refusal);
        }
        tracing::warn!(%error, reason, "Kafka client error");
    }
}

/// The metadata client is a producer only so that rdkafka polls its main
/// queue (where the error reports arrive); it never sends a record.
impl ProducerContext for LoginWatch {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode;

    #[test]
    fn refusals_are_kept_until_a_request_is_answered() {
        let w = LoginWatch::default();
        // A broker that is down is not a refusal.
        w.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(w.refusal(), None);
        w.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed",
        );
        assert!(
            w.refusal()
                .is_some_and(|r| r.contains("SASL authentication error"))
        );
        w.answered();
        assert_eq!(w.refusal(), None);
        w.error(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "Receive failed: ssl/tls alert bad certificate",
        );
        assert!(w.refusal().is_some());
    }
}
