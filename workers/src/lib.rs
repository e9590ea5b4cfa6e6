//! Worker binaries of twitterstream-operator: the producer (X API v2 to Kafka)
//! and the consumer (windowed aggregation over Kafka).

pub mod common;
pub mod consumer;
mod kafka;
mod ops;
pub mod producer;
pub mod shutdown;
mod transaction;
