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

/// Sets one config of a topic (the others go back to the broker's
/// defaults: AlterConfigs replaces the set).
pub async fn set_topic_config(name: &str, key: &str, value: &str) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let results = admin()
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic(name)).set(key, value)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("AlterConfigs request");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("configuring {t:?}: {e}"));
    }
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

/// Every committed record (key, value) of every partition of `topic`, read
/// from the beginning to the current end with `isolation.level=read_committed`,
/// as a downstream reader of window results would. Empty when the topic does
/// not exist yet.
pub async fn read_committed(topic: &str) -> Vec<(String, Vec<u8>)> {
    read_committed_records(topic)
        .await
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect()
}

/// One record as a reader sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (the producer's create time), ms.
    pub timestamp_ms: Option<i64>,
    pub key: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub value: Vec<u8>,
}

/// Like [`read_committed`], with each record's partition, offset and headers.
pub async fn read_committed_records(topic: &str) -> Vec<Record> {
    use rdkafka::Message;
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::message::Headers;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", crate::kafka_brokers())
            .set("group.id", crate::unique_name("reader"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .expect("reader");
        let Ok(md) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)) else {
            return Vec::new();
        };
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Vec::new();
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(&topic, *p, rdkafka::Offset::Beginning)
                .expect("partition list");
        }
        consumer.assign(&tpl).expect("assign");
        let mut at_end = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while at_end.len() < partitions.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "did not reach the end of {topic} within 60 s"
            );
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                                    (h.key.to_owned(), v.into_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                        headers,
                        value: m.payload().unwrap_or_default().to_vec(),
                    });
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    })
    .await
    .expect("reader thread")
}

/// Writes each `(partition, value)` to `topic`, idempotently, and waits for
/// every delivery.
pub async fn produce(topic: &str, records: &[(i32, Vec<u8>)]) {
    produce_as(topic, None, records).await
}

/// Like [`produce`], with a `stream` header on every record when given (as
/// the producer stamps it).
///
/// A record for a partition the client's metadata does not list yet fails
/// locally, before it is sent, and is sent again once the metadata has
/// caught up: right after a topic grows, a new client's first metadata
/// may still give the old count (a campaign run's first write after
/// growing 1 → 3 partitions failed with "Local: Unknown partition").
pub async fn produce_as(topic: &str, stream: Option<&str>, records: &[(i32, Vec<u8>)]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", crate::kafka_brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("producer");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for chunk in records.chunks(20_000) {
        let mut pending: Vec<&(i32, Vec<u8>)> = chunk.iter().collect();
        while !pending.is_empty() {
            let sends = pending.iter().map(|(p, v)| {
                let mut record = FutureRecord::<(), _>::to(topic).partition(*p).payload(v);
                if let Some(s) = stream {
                    record = record.headers(OwnedHeaders::new().insert(Header {
                        key: "stream",
                        value: Some(s),
                    }));
                }
                producer.send(record, Duration::from_secs(60))
            });
            let results = futures::future::join_all(sends).await;
            let mut unknown = Vec::new();
            for (record, r) in pending.iter().zip(results) {
                match r.map_err(|(e, _)| e) {
                    Ok(_) => {}
                    Err(rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::UnknownPartition,
                    )) if std::time::Instant::now() < deadline => unknown.push(*record),
                    Err(e) => panic!("delivery to {topic} partition {}: {e}", record.0),
                }
            }
            if !unknown.is_empty() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            pending = unknown;
        }
    }
}

/// Writes `records` in one transaction and aborts it: a `read_committed`
/// reader never sees them (a producer that died mid-transaction).
pub async fn produce_aborted(topic: &str, records: &[(i32, Vec<u8>)]) {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let topic = topic.to_owned();
    let records = records.to_vec();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
            ClientConfig::new()
                .set("bootstrap.servers", crate::kafka_brokers())
                .set("transactional.id", crate::unique_name("aborted"))
                .create()
                .expect("transactional producer");
        let t = Duration::from_secs(30);
        producer.init_transactions(t).expect("init transactions");
        producer.begin_transaction().expect("begin");
        for (p, v) in &records {
            producer
                .send(BaseRecord::<(), _>::to(&topic).partition(*p).payload(v))
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer.flush(t).expect("flush");
        producer.abort_transaction(t).expect("abort");
    })
    .await
    .expect("aborting producer");
}

/// Sets `user`'s SCRAM-SHA-512 password on the brokers (creating the user),
/// as a `KafkaUser` rotation does.
pub fn set_scram_password(user: &str, password: &str) {
    let out = std::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", crate::env_var("KAFKA_LIBS")))
        .arg("kafka.admin.ConfigCommand")
        .args(["--bootstrap-server", &crate::env_var("KAFKA_BROKERS")])
        .args(["--alter", "--entity-type", "users", "--entity-name", user])
        .args([
            "--add-config",
            &format!("SCRAM-SHA-512=[password={password}]"),
        ])
        .output()
        .expect("java");
    assert!(out.status.success(), "kafka-configs: {out:?}");
}

/// Runs Kafka's ACL tool on the plaintext listener (a super user here).
pub fn acls(args: &[String]) {
    let out = std::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", crate::env_var("KAFKA_LIBS")))
        .arg("org.apache.kafka.tools.AclCommand")
        .args(["--bootstrap-server", &crate::env_var("KAFKA_BROKERS")])
        .args(args)
        .output()
        .expect("java");
    assert!(out.status.success(), "kafka-acls {args:?}: {out:?}");
}

/// Makes every topic, group and transactional id whose name starts with
/// `prefix` deny-by-default: an ACL of a principal nobody has names them, so
/// (the brokers allowing what no ACL names) only explicit grants let anyone
/// else in.
pub fn deny_by_default(prefix: &str) {
    acls(
        &[
            "--add",
            "--allow-principal",
            "User:acl-owner",
            "--operation",
            "All",
            "--resource-pattern-type",
            "prefixed",
            "--topic",
            prefix,
            "--group",
            prefix,
            "--transactional-id",
            prefix,
        ]
        .map(String::from),
    );
}
