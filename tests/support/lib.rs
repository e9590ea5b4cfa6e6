//! Shared helpers for the integration tests: the environment started by
//! `tests/env/up` (Kubernetes + Kafka), read from the variables it exports.
//!
//! Integration tests never fake these components. When the environment is not
//! running they fail with a message that says how to start it.

pub mod chart;
pub mod consumer;
pub mod examples;
pub mod k8s;
pub mod kafka;
pub mod local_pods;
pub mod oauth;
pub mod operator;
pub mod pods;
pub mod postgres;
pub mod process;
pub mod truth;
pub mod xapi;

use std::time::Duration;

/// Reads a variable exported by `tests/env/up`, failing with instructions when
/// it is absent.
pub fn env_var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: integration tests need the real environment; run \
             `eval \"$(tests/env/up)\"` first (or use `bash tests/run`)"
        ),
    }
}

/// Comma-separated `host:port` list of the running Kafka brokers.
pub fn kafka_brokers() -> String {
    env_var("KAFKA_BROKERS")
}

/// A name unique to this test process and call, usable as a Kubernetes name
/// and as a Kafka topic name, so tests can share one environment.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` every 200 ms until it returns `Some`, or panics with `what`
/// after `timeout`. Tests wait for conditions, they never sleep for them.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
