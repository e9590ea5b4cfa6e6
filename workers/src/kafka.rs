//! Where every Kafka client of the workers starts: the brokers and the
//! security settings of the contract (TLS, SASL), and the watch on
//! authentication failures.
//!
//! A wrong password or an untrusted certificate never makes a librdkafka call
//! fail fast: the client reports the failure to its error callback and
//! reconnects, while the call waits out its timeout (measured on Kafka 4.1.1:
//! `init_transactions` ran to its 120 s limit under a wrong SCRAM password).
//! So the callbacks record such failures in an [`AuthWatch`], and a worker
//! whose clients have failed to authenticate for longer than a grace period
//! exits with the reason (the pod's termination message) instead of
//! retrying in silence.
//!
//! librdkafka reads the credential files only when a client is created, so
//! [`CredentialFiles`] notices when the kubelet rewrites a rotated Secret,
//! and the workers then build new clients at their next transaction
//! boundary.

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twitterstream_contract::kafka::{KafkaSecurity, KafkaSecurityError, names_tls_refusal};

/// A client configuration for `brokers` with the security settings applied
/// (secrets read from their files now).
pub(crate) fn client_config(
    brokers: &str,
    security: &KafkaSecurity,
) -> Result<ClientConfig, KafkaSecurityError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in security.client_properties()? {
        c.set(k, v);
    }
    Ok(c)
}

/// What every client of a worker shares: the brokers, the security
/// settings and the authentication watch.
#[derive(Debug, Clone)]
pub(crate) struct KafkaClients {
    pub(crate) brokers: String,
    pub(crate) security: KafkaSecurity,
    pub(crate) auth: AuthWatch,
}

impl KafkaClients {
    /// A configuration for a new client, secrets read now.
    pub(crate) fn config(&self) -> Result<ClientConfig, KafkaSecurityError> {
        client_config(&self.brokers, &self.security)
    }

    /// The context of an auxiliary client.
    pub(crate) fn context(&self) -> AuthContext {
        AuthContext {
            auth: self.auth.clone(),
        }
    }
}

/// Whether a client error means the credentials or certificates are wrong
/// (as opposed to a broker that is down).
pub(crate) fn is_auth_failure(error: &KafkaError, reason: &str) -> bool {
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
        return true;
    }
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::SSL) || names_tls_refusal(reason)
}

/// The client context of the workers' auxiliary clients (metadata, topic
/// admin, resume reader): client errors are logged, and authentication
/// failures reported to the watch.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthContext {
    pub(crate) auth: AuthWatch,
}

impl ClientContext for AuthContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_auth_failure(&error, reason) {
            self.auth.failed(&error, reason);
        }
        tracing::warn!(%error, reason, "Kafka client error");
    }
}

impl ConsumerContext for AuthContext {}

impl rdkafka::producer::ProducerContext for AuthContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[derive(Debug, Default)]
struct Failing {
    since: Option<Instant>,
    last: String,
    /// The latest refusal, kept when a success clears `since`.
    refused_at: Option<Instant>,
}

/// Authentication failures of a worker's Kafka clients, since the last
/// success. Cheap to clone; every client of the worker shares one.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthWatch(Arc<Mutex<Failing>>);

impl AuthWatch {
    /// Called by a client's error callback.
    pub(crate) fn failed(&self, error: &KafkaError, reason: &str) {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.since.get_or_insert_with(Instant::now);
        f.refused_at = Some(Instant::now());
        f.last = format!("{error}: {reason}");
    }

    /// Whether any client was refused at or after `t`, whatever succeeded
    /// since.
    fn refused_since(&self, t: Instant) -> bool {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.refused_at.is_some_and(|r| r >= t)
    }

    /// A call that needed an authenticated connection succeeded.
    pub(crate) fn succeeded(&self) {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.since = None;
    }

    /// The last failure, when the clients have been failing for `grace`.
    pub(crate) fn failing_for(&self, grace: Duration) -> Option<String> {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.since
            .filter(|s| s.elapsed() >= grace)
            .map(|_| f.last.clone())
    }

    /// Resolves with the last failure once the clients have been failing
    /// for `grace` (checked every second).
    pub(crate) async fn failed_for(&self, grace: Duration) -> String {
        loop {
            if let Some(last) = self.failing_for(grace) {
                return last;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The last failure, if failing now (for readiness and logs).
    pub(crate) fn current(&self) -> Option<String> {
        self.failing_for(Duration::ZERO)
    }

    /// Returns once the brokers have refused a client since `files` were
    /// read and the files have changed since: the old credentials were
    /// rotated away before a commit could notice (nothing commits while
    /// refused), so the clients must be replaced now.
    ///
    /// "Refused since", not "failing now": the clients share this watch,
    /// and one client's success clears the failure of all. A CI run's
    /// consumer had its aggregate stage's producer refused while the merge
    /// stage, logged in again, succeeded every 100 ms: the once-a-second
    /// look never saw a failure, and the aggregate stage was never told.
    pub(crate) async fn refused_after_rotation(&self, mut files: CredentialFiles) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.refused_since(files.read_at) && files.changed() {
                return;
            }
        }
    }
}

/// How often the credential files are compared with those the clients were
/// built from: a few small files, read every 5 s.
const CREDENTIALS_CHECK: Duration = Duration::from_secs(5);

/// The credential files a set of clients was built from.
#[derive(Debug, Clone)]
pub(crate) struct CredentialFiles {
    security: KafkaSecurity,
    built_with: u64,
    read_at: Instant,
    next_check: Instant,
}

impl CredentialFiles {
    /// Taken just before the clients read the files.
    pub(crate) fn new(security: &KafkaSecurity) -> Self {
        Self {
            security: security.clone(),
            built_with: fingerprint(security),
            read_at: Instant::now(),
            next_check: Instant::now() + CREDENTIALS_CHECK,
        }
    }

    /// Looks at the files at the next `changed` already.
    #[cfg(test)]
    pub(crate) fn check_now(mut self) -> Self {
        self.next_check = Instant::now();
        self
    }

    /// Whether the files now differ from what the clients read (looked at
    /// once per [`CREDENTIALS_CHECK`]; false in between).
    pub(crate) fn changed(&mut self) -> bool {
        if Instant::now() < self.next_check {
            return false;
        }
        self.next_check = Instant::now() + CREDENTIALS_CHECK;
        fingerprint(&self.security) != self.built_with
    }
}

/// The contents of the credential files (or why one cannot be read), as one
/// number.
fn fingerprint(security: &KafkaSecurity) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for path in security.files() {
        path.hash(&mut h);
        match std::fs::read(path) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_from_the_first_and_a_success_clears_them() {
        let w = AuthWatch::default();
        assert_eq!(w.current(), None);
        let e = KafkaError::ClientCreation("x".into());
        w.failed(&e, "SASL authentication error");
        assert!(
            w.current()
                .is_some_and(|m| m.contains("SASL authentication error"))
        );
        assert_eq!(w.failing_for(Duration::from_secs(3600)), None);
        w.succeeded();
        assert_eq!(w.current(), None);
    }

    #[test]
    fn tls_alerts_and_sasl_errors_are_auth_failures_and_a_broker_down_is_not() {
        let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        let bad_cert = "ssl://127.0.0.1:1/bootstrap: Receive failed: ssl/record/rec_layer_s3.c:918:ssl3_read_bytes error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL alert number 42";
        assert!(is_auth_failure(&transport, bad_cert));
        let sasl = KafkaError::Global(RDKafkaErrorCode::Authentication);
        assert!(is_auth_failure(&sasl, "SASL authentication error"));
        let refused =
            "ssl://127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused";
        assert!(!is_auth_failure(&transport, refused));
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        assert!(!is_auth_failure(&down, "1/1 brokers are down"));
    }

    #[test]
    fn plaintext_settings_give_a_bare_client_config() {
        let c = client_config("127.0.0.1:9092", &KafkaSecurity::default()).unwrap();
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(c.get("security.protocol"), None);
    }

    /// A SASL password file holding "old" in a directory of its own, and
    /// the settings that name it.
    fn password_file(name: &str) -> (std::path::PathBuf, std::path::PathBuf, KafkaSecurity) {
        let dir = std::env::temp_dir().join(format!("tws-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = dir.join("password");
        std::fs::write(&password, "old").unwrap();
        let security = KafkaSecurity {
            kafka_sasl_password_file: Some(password.clone()),
            ..KafkaSecurity::default()
        };
        (dir, password, security)
    }

    /// The masking a CI run hit: one client refused after the brokers
    /// rotated the password, another client succeeding right after, and
    /// then the new file arriving. The clients must be told to log in again.
    #[tokio::test]
    async fn a_refusal_masked_by_another_clients_success_still_counts_after_rotation() {
        let (dir, password, security) = password_file("masked");
        let w = AuthWatch::default();
        let files = CredentialFiles::new(&security).check_now();
        let refused = KafkaError::Global(RDKafkaErrorCode::Authentication);
        w.failed(&refused, "SASL authentication error");
        w.succeeded();
        std::fs::write(&password, "new").unwrap();
        let told = tokio::time::timeout(Duration::from_secs(10), w.refused_after_rotation(files));
        assert!(told.await.is_ok(), "never told to log in again");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Without a refusal since the files were read, a changed file waits
    /// for the next commit (no rebalance for nothing).
    #[tokio::test]
    async fn a_changed_file_alone_or_an_older_refusal_does_not_force_a_new_login() {
        let (dir, password, security) = password_file("unrefused");
        let w = AuthWatch::default();
        let refused = KafkaError::Global(RDKafkaErrorCode::Authentication);
        w.failed(&refused, "SASL authentication error");
        let files = CredentialFiles::new(&security).check_now();
        std::fs::write(&password, "new").unwrap();
        let told = tokio::time::timeout(Duration::from_secs(3), w.refused_after_rotation(files));
        assert!(
            told.await.is_err(),
            "told to log in again without a refusal"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rewritten_credential_file_is_noticed_at_the_next_check() {
        let (_dir, password, security) = password_file("creds");
        let mut files = CredentialFiles::new(&security);
        files.next_check = Instant::now();
        assert!(!files.changed(), "unchanged");
        std::fs::write(&password, "new").unwrap();
        assert!(!files.changed(), "looked at once per interval");
        files.next_check = Instant::now();
        assert!(files.changed());
        // A file the kubelet has not written yet counts as a change too.
        std::fs::remove_file(&password).unwrap();
        files.next_check = Instant::now();
        assert!(files.changed());
    }
}
