//! Worker binaries of twitterstream-operator: the producer (X API v2 to Kafka)
//! and the consumer (windowed aggregation over Kafka).
