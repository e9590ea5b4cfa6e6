//! Kafka topics of a pipeline, through rdkafka's admin client: created when
//! missing, grown when more partitions are asked for, never shrunk.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a pipeline asks of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicRequest {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
}

/// The topic as it is in Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicState {
    pub partitions: i32,
    pub replication_factor: i32,
}

/// What `ensure` had to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicChange {
    None,
    Created,
    PartitionsIncreased { from: i32, to: i32 },
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("Kafka brokers {brokers} unreachable: {source}")]
    Unreachable {
        brokers: String,
        #[source]
        source: KafkaError,
    },
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
    #[error("Kafka client: {0}")]
    Client(#[from] KafkaError),
    #[error("Kafka metadata request did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl TopicError {
    /// Short CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TopicError::Unreachable { .. } => "KafkaUnreachable",
            TopicError::CannotShrink { .. } => "PartitionsCannotShrink",
            TopicError::Admin { .. } => "TopicAdminFailed",
            TopicError::Client(_) | TopicError::Join(_) => "KafkaClientError",
        }
    }
}

type Admin = Arc<AdminClient<DefaultClientContext>>;

/// Admin clients by broker list, so every pipeline on the same cluster shares
/// one connection set.
pub struct Topics {
    clients: Mutex<HashMap<String, Admin>>,
    timeout: Duration,
}

impl Topics {
    pub fn new(timeout: Duration) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn client(&self, brokers: &str) -> Result<Admin, TopicError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(brokers) {
            return Ok(c.clone());
        }
        let c: Admin = Arc::new(
            ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("socket.timeout.ms", self.timeout.as_millis().to_string())
                .create()?,
        );
        clients.insert(brokers.to_string(), c.clone());
        Ok(c)
    }

    /// The topic's state, or `None` when it does not exist.
    pub async fn describe(
        &self,
        brokers: &str,
        topic: &str,
    ) -> Result<Option<TopicState>, TopicError> {
        let admin = self.client(brokers)?;
        let name = topic.to_string();
        let timeout = self.timeout;
        // librdkafka's metadata call blocks; keep it off the async workers.
        let md =
            tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(Some(&name), timeout))
                .await?
                .map_err(|source| TopicError::Unreachable {
                    brokers: brokers.to_string(),
                    source,
                })?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
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
    pub async fn ensure(
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
                            return Err(TopicError::Admin {
                                action: "creating",
                                topic,
                                reason: code.to_string(),
                            });
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
                    r.map_err(|(topic, code)| TopicError::Admin {
                        action: "adding partitions to",
                        topic,
                        reason: code.to_string(),
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
    pub async fn delete(&self, brokers: &str, topic: &str) -> Result<(), TopicError> {
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
