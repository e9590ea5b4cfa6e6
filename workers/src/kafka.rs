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
use rdkafka::error::KafkaError;
#[cfg(test)]
use rdkafka::error::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twitterstream_contract::kafka::{KafkaSecurity, KafkaSecurityError};
use twitterstream_contract::refusal::Refusal;

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

/// librdkafka's log line in the worker's log: errors as warnings (it
/// retries on its own), the rest at debug.
pub(crate) fn log_to_tracing(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
            tracing::warn!(target: "librdkafka", fac, "{message}")
        }
        _ => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
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
            group: None,
        }
    }
}

/// The client context of the workers' auxiliary clients (metadata, topic
/// admin, resume reader): client errors are logged, and authentication
/// failures reported to the watch.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthContext {
    pub(crate) auth: AuthWatch,
    /// The group the client reads offsets of, and who asks: a group
    /// authorization error reaches only the error callback (the coordinator
    /// lookup), without the group's name.
    pub(crate) group: Option<(&'static str, String)>,
}

impl AuthContext {
    /// The context of a client that reads `group`'s offsets for `asker`.
    pub(crate) fn for_group(auth: &AuthWatch, asker: &'static str, group: String) -> Self {
        AuthContext {
            auth: auth.clone(),
            group: Some((asker, group)),
        }
    }
}

impl ClientContext for AuthContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.auth.client_log(fac, log_message);
        log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let (Some((asker, group)), Some(code)) = (&self.group, error.rdkafka_error_code())
            && let Some(refusal) = Refusal::denied(
                code,
                "READ",
                twitterstream_contract::refusal::Resource::Group(group.clone()),
            )
        {
            self.auth.denied(asker, refusal);
            return;
        }
        if !self.auth.client_error(&error, reason) {
            tracing::warn!(%error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for AuthContext {}

impl rdkafka::producer::ProducerContext for AuthContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// A worker whose clients have never been accepted exits after this much
/// of refusals even when its grace is longer: nothing is running yet that a
/// wait could keep, and a refusal at first contact is a setting to fix (a
/// stranger's first stream waited out the 60 s default in silence, issue
/// #26). The restarted pod reads the Secret anew. 15 s: the workers then
/// exited 20-24 s after they started (16 bad settings at once, a release
/// build running beside them), so the condition shows it within 30 s.
pub(crate) const FIRST_CONTACT_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
struct Failing {
    /// Logins refused since the last success.
    since: Option<Instant>,
    last: Option<Refusal>,
    /// The latest refusal, kept when a success clears `since`.
    refused_at: Option<Instant>,
    /// Operations the ACLs denied, by who asked (a stage, discovery): each
    /// is cleared by its own asker's next success, so one stage allowed
    /// never hides another one denied.
    denied: BTreeMap<&'static str, (Instant, Refusal)>,
    /// Whether any client was ever accepted.
    accepted: bool,
    /// Refusals already logged as errors (each once).
    logged: Vec<Refusal>,
}

/// Why the clients keep failing: what [`AuthWatch::failed_for`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    /// How long it had lasted when the worker gave up.
    pub seconds: u64,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Refused { refusal, seconds } = self;
        if refusal.is_login() {
            write!(f, "could not log in to Kafka for {seconds} s: {refusal}")
        } else {
            write!(f, "was denied by Kafka's ACLs for {seconds} s: {refusal}")
        }
    }
}

/// Refusals of a worker's Kafka clients (logins since the last success,
/// operations denied by ACLs). Cheap to clone; every client of the worker
/// shares one.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthWatch(Arc<Mutex<Failing>>);

impl AuthWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Failing> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client's error callback: true when it was a refused login, now
    /// recorded (and logged); other errors are the caller's to log.
    pub(crate) fn client_error(&self, error: &KafkaError, reason: &str) -> bool {
        let refusal = Refusal::of_client_error(error, reason);
        let refused = refusal.is_some();
        if let Some(refusal) = refusal {
            self.failed(refusal);
        }
        refused
    }

    /// A client's log line: a refused connection is recorded as a refused
    /// login (it also comes as an error event, but only to a client that
    /// is polled).
    pub(crate) fn client_log(&self, fac: &str, message: &str) {
        if let Some(refusal) = Refusal::of_log(fac, message) {
            self.failed(refusal);
        }
    }

    /// A refused login.
    pub(crate) fn failed(&self, refusal: Refusal) {
        let mut f = self.lock();
        f.since.get_or_insert_with(Instant::now);
        f.refused_at = Some(Instant::now());
        Self::log_once(&mut f, &refusal);
        f.last = Some(refusal);
    }

    /// An operation `asker` attempted was denied by the ACLs.
    pub(crate) fn denied(&self, asker: &'static str, refusal: Refusal) {
        let mut f = self.lock();
        Self::log_once(&mut f, &refusal);
        let since = f.denied.get(asker).map_or_else(Instant::now, |(t, _)| *t);
        f.denied.insert(asker, (since, refusal));
    }

    /// What `asker` attempts is allowed (again).
    pub(crate) fn allowed(&self, asker: &'static str) {
        self.lock().denied.remove(asker);
    }

    /// `asker` may do what `covers` says of its denial (a stage assigned
    /// partitions may read its group, and still not write its topic).
    pub(crate) fn allowed_where(&self, asker: &'static str, covers: impl Fn(&Refusal) -> bool) {
        let mut f = self.lock();
        if f.denied.get(asker).is_some_and(|(_, r)| covers(r)) {
            f.denied.remove(asker);
        }
    }

    /// Each distinct refusal is an error line once; repeats are the
    /// clients' own warnings.
    fn log_once(f: &mut Failing, refusal: &Refusal) {
        if f.logged.contains(refusal) {
            tracing::debug!(reason = refusal.reason(), "Kafka refused again: {refusal}");
            return;
        }
        tracing::error!(
            reason = refusal.reason(),
            "Kafka refused this worker: {refusal}"
        );
        if f.logged.len() < 32 {
            f.logged.push(refusal.clone());
        }
    }

    /// Whether any client was refused at or after `t`, whatever succeeded
    /// since.
    fn refused_since(&self, t: Instant) -> bool {
        self.lock().refused_at.is_some_and(|r| r >= t)
    }

    /// A call that needed an authenticated connection succeeded.
    pub(crate) fn succeeded(&self) {
        let mut f = self.lock();
        f.since = None;
        f.accepted = true;
    }

    /// The refusal, when a login has been refused, or an operation denied,
    /// for `grace` ([`FIRST_CONTACT_GRACE`] at the most until a client was
    /// accepted).
    pub(crate) fn failing_for(&self, grace: Duration) -> Option<Refused> {
        let f = self.lock();
        let grace = if f.accepted {
            grace
        } else {
            grace.min(FIRST_CONTACT_GRACE)
        };
        let login = f.since.zip(f.last.clone());
        let denied = f.denied.values().min_by_key(|(t, _)| *t).cloned();
        login
            .into_iter()
            .chain(denied)
            .find(|(since, _)| since.elapsed() >= grace)
            .map(|(since, refusal)| Refused {
                refusal,
                seconds: since.elapsed().as_secs(),
            })
    }

    /// Resolves with the refusal once it has lasted for `grace` (checked
    /// every second).
    pub(crate) async fn failed_for(&self, grace: Duration) -> Refused {
        loop {
            if let Some(refused) = self.failing_for(grace) {
                return refused;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The refusal, if failing now (for readiness and logs).
    pub(crate) fn current(&self) -> Option<Refusal> {
        self.failing_for(Duration::ZERO).map(|r| r.refusal)
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

    fn sasl_refusal() -> Refusal {
        let e = KafkaError::Global(RDKafkaErrorCode::Authentication);
        Refusal::of_client_error(&e, "SASL authentication error").expect("a refusal")
    }

    #[test]
    fn failures_count_from_the_first_and_a_success_clears_them() {
        let w = AuthWatch::default();
        assert_eq!(w.current(), None);
        w.failed(sasl_refusal());
        assert!(
            w.current()
                .is_some_and(|m| m.to_string().contains("SASL authentication error"))
        );
        assert_eq!(w.failing_for(Duration::from_secs(3600)), None);
        w.succeeded();
        assert_eq!(w.current(), None);
    }

    /// One stage allowed, or a login accepted, never hides another
    /// stage's denial; a stage rewinding after an aborted write (assigned
    /// again) keeps it; its own success clears it.
    #[test]
    fn a_denial_lasts_until_its_own_asker_is_allowed() {
        use twitterstream_contract::refusal::Resource;
        let w = AuthWatch::default();
        let denied = Refusal::Authorization {
            operation: "WRITE",
            resource: Resource::Topic("out".into()),
        };
        w.denied("merge", denied.clone());
        w.succeeded();
        w.allowed("aggregate");
        w.allowed_where("merge", |r| {
            matches!(
                r,
                Refusal::Authorization {
                    resource: Resource::Group(_),
                    ..
                }
            )
        });
        assert_eq!(w.current(), Some(denied));
        assert_eq!(w.failing_for(Duration::from_secs(3600)), None);
        w.allowed("merge");
        assert_eq!(w.current(), None);
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
        w.failed(sasl_refusal());
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
        w.failed(sasl_refusal());
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
