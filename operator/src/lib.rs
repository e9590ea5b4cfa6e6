//! twitterstream-operator: reconciles `TwitterStream` resources into producer and
//! consumer Deployments backed by a Kafka topic.
