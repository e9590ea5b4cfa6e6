//! Kafka topics of a pipeline, through rdkafka's admin client: created when
//! missing, grown when more partitions are asked for, never shrunk.

mod login;
mod progress;

pub(crate) use progress::PartitionProgress;

use login::LoginWatch;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use twitterstream_contract::kafka::{KafkaSecurity, KafkaSecurityError};
use twitterstream_contract::refusal::{Refusal, Resource};

/// What a pipeline asks of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TopicRequest {
    pub(crate) name: String,
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i32,
}

/// The topic as it is in Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicState {
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i32,
}

/// What `ensure` had to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TopicChange {
    None,
    Created,
    PartitionsIncreased { from: i32, to: i32 },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TopicError {
    #[error("Kafka brokers {brokers} unreachable: {source}")]
    Unreachable {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("Kafka brokers {brokers}: the operator could not log in: {reason}")]
    LoginRefused { brokers: String, reason: String },
    #[error(
        "topic {topic} has {have} partitions and the spec asks for {want}: Kafka cannot remove partitions"
    )]
    CannotShrink { topic: String, have: i32, want: i32 },
    #[error("{action} topic {topic}: {reason}")]
    Admin {
        action: &'static str,
        topic: String,
        reason: String,
    },
    /// The operator's principal lacks an ACL.
    #[error("Kafka brokers {brokers}: {refusal}")]
    Denied { brokers: String, refusal: Refusal },
    #[error("Kafka client: {0}")]
    Client(#[from] KafkaError),
    #[error("the operator's Kafka security settings: {0}")]
    Security(#[from] KafkaSecurityError),
    #[error("Kafka metadata request did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl TopicError {
    /// Short CamelCase reason for conditions, Events and metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            TopicError::Unreachable { .. } => "KafkaUnreachable",
            TopicError::LoginRefused { .. } => "KafkaAuthenticationFailed",
            TopicError::CannotShrink { .. } => "PartitionsCannotShrink",
            TopicError::Admin { .. } => "TopicAdminFailed",
            TopicError::Denied { .. } => "KafkaAuthorizationFailed",
            TopicError::Client(_) | TopicError::Join(_) => "KafkaClientError",
            TopicError::Security(_) => "KafkaSecurityMisconfigured",
        }
    }
}

/// A refused admin request: a missing ACL named as such, anything else
/// as the broker's code.
fn admin_error(
    brokers: &str,
    action: &'static str,
    operation: &'static str,
    topic: String,
    code: RDKafkaErrorCode,
) -> TopicError {
    match Refusal::denied(code, operation, Resource::Topic(topic.clone())) {
        Some(refusal) => TopicError::Denied {
            brokers: brokers.to_string(),
            refusal,
        },
        None => TopicError::Admin {
            action,
            topic,
            reason: code.to_string(),
        },
    }
}

type Admin = Arc<AdminClient<DefaultClientContext>>;

/// A client for metadata requests, and how many topics it has looked up.
struct MetadataClient {
    client: ThreadedProducer<LoginWatch>,
    lookups: AtomicUsize,
}

/// Topics one metadata client looks up before it is replaced. librdkafka
/// keeps an object for every topic a client has ever named (its partitions,
/// queues and cached metadata, a few kilobytes each) until the client is
/// destroyed, so a long-lived one grows with every pipeline ever reconciled:
/// megabytes at a thousand streams.
const LOOKUPS_PER_METADATA_CLIENT: usize = 64;

/// Metadata lookups at once, at most. Each holds a blocking thread (its own
/// stack and malloc arena) while librdkafka waits for the broker; with every
/// reconcile looking up at once, thousands of new streams kept dozens of
/// threads alive for nothing: the broker answers them one after another.
const CONCURRENT_LOOKUPS: usize = 4;

/// Group progress probes at once, at most: each creates a client (threads,
/// connections, a login) for its one group.
const CONCURRENT_PROGRESS_PROBES: usize = 2;

/// Clients by broker list, so every pipeline on the same cluster shares one
/// connection set: an admin client for changes, and a metadata client (see
/// [`LOOKUPS_PER_METADATA_CLIENT`]) for lookups.
pub(crate) struct Topics {
    clients: Mutex<HashMap<String, Admin>>,
    metadata: Mutex<HashMap<String, Arc<MetadataClient>>>,
    lookups: tokio::sync::Semaphore,
    progress_probes: tokio::sync::Semaphore,
    timeout: Duration,
    /// The operator's own Kafka credentials (its flags; files it mounts).
    security: KafkaSecurity,
}

impl Topics {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            metadata: Mutex::new(HashMap::new()),
            lookups: tokio::sync::Semaphore::new(CONCURRENT_LOOKUPS),
            progress_probes: tokio::sync::Semaphore::new(CONCURRENT_PROGRESS_PROBES),
            timeout,
            security: KafkaSecurity::default(),
        }
    }

    /// How the operator authenticates to the brokers it manages topics on.
    pub(crate) fn with_security(mut self, security: KafkaSecurity) -> Self {
        self.security = security;
        self
    }

    /// A client configuration, the credentials read from their files now.
    fn config(&self, brokers: &str) -> Result<ClientConfig, TopicError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("socket.timeout.ms", self.timeout.as_millis().to_string());
        for (k, v) in self.security.client_properties()? {
            config.set(k, v);
        }
        Ok(config)
    }

    fn client(&self, brokers: &str) -> Result<Admin, TopicError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(brokers) {
            return Ok(c.clone());
        }
        let c: Admin = Arc::new(self.config(brokers)?.create()?);
        clients.insert(brokers.to_string(), c.clone());
        Ok(c)
    }

    /// The metadata client for these brokers, counting one more lookup; a
    /// client that has done its share is handed out a last time and replaced.
    /// It is destroyed when its last lookup ends (on a blocking thread, as
    /// destroying joins librdkafka's threads).
    fn metadata_client(&self, brokers: &str) -> Result<Arc<MetadataClient>, TopicError> {
        let mut clients = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        let client = match clients.get(brokers) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(MetadataClient {
                    client: self
                        .config(brokers)?
                        .create_with_context(LoginWatch::default())?,
                    lookups: AtomicUsize::new(0),
                });
                clients.insert(brokers.to_string(), c.clone());
                c
            }
        };
        if client.lookups.fetch_add(1, Ordering::Relaxed) + 1 >= LOOKUPS_PER_METADATA_CLIENT {
            clients.remove(brokers);
        }
        Ok(client)
    }

    /// Drops the clients of these brokers (destroyed on a blocking thread,
    /// as destroying joins librdkafka's threads).
    fn forget(&self, brokers: &str) {
        let metadata = self
            .metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(brokers);
        let admin = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(brokers);
        tokio::task::spawn_blocking(move || drop((metadata, admin)));
    }

    /// The topic's state, or `None` when it does not exist.
    pub(crate) async fn describe(
        &self,
        brokers: &str,
        topic: &str,
    ) -> Result<Option<TopicState>, TopicError> {
        // The semaphore is never closed, so this always gets a permit.
        let _permit = self.lookups.acquire().await.ok();
        let metadata = self.metadata_client(brokers)?;
        let name = topic.to_string();
        let timeout = self.timeout;
        // librdkafka's metadata call blocks; keep it off the async workers.
        // The closure owns the client, so a retired one is destroyed there too.
        let login = metadata.client.context().clone();
        let md = tokio::task::spawn_blocking(move || {
            metadata
                .client
                .client()
                .fetch_metadata(Some(&name), timeout)
        })
        .await?
        .map_err(|source| match login.refusal() {
            Some(reason) => {
                // The next attempt logs in anew, reading the credential
                // files again: a rotated Secret takes effect then.
                self.forget(brokers);
                TopicError::LoginRefused {
                    brokers: brokers.to_string(),
                    reason,
                }
            }
            None => TopicError::Unreachable {
                brokers: brokers.to_string(),
                source,
            },
        })?;
        login.answered();
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        if let Some(code) = t.error()
            && let Some(refusal) =
                Refusal::denied(code.into(), "DESCRIBE", Resource::Topic(topic.to_owned()))
        {
            return Err(TopicError::Denied {
                brokers: brokers.to_string(),
                refusal,
            });
        }
        if t.error().is_some() || t.partitions().is_empty() {
            return Ok(None);
        }
        Ok(Some(TopicState {
            partitions: t.partitions().len() as i32,
            replication_factor: t
                .partitions()
                .first()
                .map(|p| p.replicas().len() as i32)
                .unwrap_or(0),
        }))
    }

    /// Makes the topic exist with at least the requested partitions.
    pub(crate) async fn ensure(
        &self,
        brokers: &str,
        want: &TopicRequest,
    ) -> Result<(TopicState, TopicChange), TopicError> {
        let admin = self.client(brokers)?;
        let opts = AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout));
        match self.describe(brokers, &want.name).await? {
            None => {
                let new = NewTopic::new(
                    &want.name,
                    want.partitions,
                    TopicReplication::Fixed(want.replication_factor),
                );
                let results = admin.create_topics(&[new], &opts).await?;
                for r in results {
                    match r {
                        Ok(_) => {}
                        // Another reconcile (or a user) created it first: fine.
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((topic, code)) => {
                            return Err(admin_error(brokers, "creating", "CREATE", topic, code));
                        }
                    }
                }
                Ok((
                    TopicState {
                        partitions: want.partitions,
                        replication_factor: want.replication_factor,
                    },
                    TopicChange::Created,
                ))
            }
            Some(have) if have.partitions < want.partitions => {
                let grow = NewPartitions::new(&want.name, want.partitions as usize);
                for r in admin.create_partitions(&[grow], &opts).await? {
                    r.map_err(|(topic, code)| {
                        admin_error(brokers, "adding partitions to", "ALTER", topic, code)
                    })?;
                }
                Ok((
                    TopicState {
                        partitions: want.partitions,
                        ..have.clone()
                    },
                    TopicChange::PartitionsIncreased {
                        from: have.partitions,
                        to: want.partitions,
                    },
                ))
            }
            Some(have) if have.partitions > want.partitions => Err(TopicError::CannotShrink {
                topic: want.name.clone(),
                have: have.partitions,
                want: want.partitions,
            }),
            Some(have) => Ok((have, TopicChange::None)),
        }
    }

    /// Deletes a topic; a topic that is already gone is not an error.
    pub(crate) async fn delete(&self, brokers: &str, topic: &str) -> Result<(), TopicError> {
        let admin = self.client(brokers)?;
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout));
        for r in admin.delete_topics(&[topic], &opts).await? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => {
                    return Err(TopicError::Admin {
                        action: "deleting",
                        topic,
                        reason: code.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}
