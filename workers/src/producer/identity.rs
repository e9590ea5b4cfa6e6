//! The Kafka names of a stream's producer.

/// The transactional id of a stream's producer (`qualified` is
/// `<namespace>.<name>`): stable across restarts, so the restarted process
/// fences the old one, and distinct across namespaces, so equally named
/// streams do not.
pub(crate) fn transactional_id(qualified: &str) -> String {
    format!("twitterstream-producer-{qualified}")
}
