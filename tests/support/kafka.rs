//! Kafka helpers on the real broker(s) from `tests/env/up`.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use std::time::Duration;

pub fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", crate::kafka_brokers())
        .create()
        .expect("creating Kafka admin client")
}

/// Creates a topic and waits until its metadata is visible to clients.
pub async fn create_topic(name: &str, partitions: i32, replication: i32) {
    let admin = admin();
    let results = admin
        .create_topics(
            &[NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(replication),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("CreateTopics request");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", crate::kafka_brokers())
        .create()
        .expect("metadata client");
    crate::eventually("topic metadata", Duration::from_secs(30), || {
        let md = consumer
            .fetch_metadata(Some(name), Duration::from_secs(5))
            .ok();
        let ready = md.is_some_and(|md| {
            md.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        });
        std::future::ready(ready.then_some(()))
    })
    .await;
}

/// Partition count of a topic, or `None` when it does not exist.
pub async fn describe_topic(name: &str) -> Option<usize> {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", crate::kafka_brokers())
            .create()
            .expect("metadata client");
        let md = consumer
            .fetch_metadata(Some(&name), Duration::from_secs(10))
            .expect("topic metadata");
        md.topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len())
    })
    .await
    .expect("metadata task")
}
