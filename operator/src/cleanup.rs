//! A deleted TwitterStream: its topics go too when it asked for that
//! (`kafka.deleteTopicOnDelete`), unless another stream on the same Kafka
//! still uses them, or Kafka stays unreachable past the timeout.

use crate::apply::{self, TOPIC_FINALIZER};
use crate::context::Context;
use crate::crd::TwitterStream;
use crate::error::Error;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

/// Whether two streams name a broker in common (so the same cluster).
fn shares_a_broker(a: &TwitterStream, b: &TwitterStream) -> bool {
    a.spec
        .kafka
        .brokers
        .iter()
        .any(|x| b.spec.kafka.brokers.contains(x))
}

pub(crate) async fn finalize(
    tws: &TwitterStream,
    ctx: &Context,
    api: &Api<TwitterStream>,
) -> Result<Action, Error> {
    ctx.forget_samples(tws);
    if !tws.finalizers().iter().any(|f| f == TOPIC_FINALIZER) {
        return Ok(Action::await_change());
    }
    let brokers = apply::brokers(tws);
    // Deletion must not hang forever on an unreachable Kafka (a namespace
    // holding both could never terminate): past the timeout the topics stay.
    let waited = tws.meta().deletion_timestamp.as_ref().map_or(0, |t| {
        k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second()
    });
    let give_up = waited >= ctx.topic_delete_timeout.as_secs() as i64;
    let others = ctx.other_streams(tws).await?;
    for req in apply::topic_requests(tws) {
        // Another stream on the same Kafka still reads or writes it.
        if let Some(user) = others.iter().find(|o| {
            apply::topic_requests(o).iter().any(|r| r.name == req.name) && shares_a_broker(o, tws)
        }) {
            ctx.events
                .emit(
                    tws,
                    EventType::Normal,
                    "TopicKept",
                    "DeleteTopic",
                    format!(
                        "Kept Kafka topic {}: TwitterStream {}/{} still uses it",
                        req.name,
                        user.namespace().unwrap_or_default(),
                        user.name_any()
                    ),
                )
                .await;
            continue;
        }
        match ctx.topics.delete(&brokers, &req.name).await {
            Ok(()) => {
                ctx.events.emit(
                    tws,
                    EventType::Normal,
                    "TopicDeleted",
                    "DeleteTopic",
                    format!("Deleted Kafka topic {}", req.name),
                )
                .await
            }
            Err(e) if give_up => {
                ctx.events.emit(
                    tws,
                    EventType::Warning,
                    "TopicNotDeleted",
                    "DeleteTopic",
                    format!(
                        "Left Kafka topic {} in place: not deleted within {} s of the deletion ({e})",
                        req.name,
                        ctx.topic_delete_timeout.as_secs()
                    ),
                )
                .await
            }
            Err(e) => return Err(e.into()),
        }
    }
    apply::set_topic_finalizer(tws, api, false).await?;
    Ok(Action::await_change())
}
