//! The README's TwitterStream example (the seed's search), shared by the tests
//! that need a valid resource to start from.

use serde_json::{Value, json};

/// The example's `spec`, with the given brokers and topic (output topic
/// `<topic>-windows`).
pub fn superbowl_spec(brokers: &[&str], topic: &str) -> Value {
    json!({
        "keyword": "superbowl",
        "language": "en",
        "startTime": "2020-01-01T00:00:00Z",
        "endTime": "2020-03-03T00:00:00Z",
        "minFaves": 60000,
        "source": "x-search",
        "pollIntervalSeconds": 10,
        "credentialsSecret": "x-api",
        "kafka": {
            "brokers": brokers,
            "topic": topic,
            "partitions": 3,
            "replicationFactor": 1,
            "outputTopic": format!("{topic}-windows")
        },
        "window": { "seconds": 10, "slideSeconds": 10, "allowedLatenessSeconds": 5 },
        "producer": { "replicas": 1 },
        "consumer": { "replicas": 2 },
        "suspend": false
    })
}
