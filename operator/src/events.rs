//! Kubernetes Events about a TwitterStream, published off the reconcile's
//! path by one task.

use crate::crd::TwitterStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use tracing::warn;

/// Where reconciles hand their Events.
pub(crate) struct Events {
    queue: tokio::sync::mpsc::Sender<(Event, ObjectReference)>,
}

impl Events {
    /// Starts the publishing task; it ends when this is dropped.
    pub(crate) fn start(client: Client, reporter: Reporter) -> Self {
        let (queue, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        tokio::spawn(publish_events(client, reporter, rx));
        Events { queue }
    }

    /// Queues an Event about `tws`. Best effort: an Event is a record, not a
    /// step the pipeline waits for, and a lost one must not fail anything.
    pub(crate) async fn emit(
        &self,
        tws: &TwitterStream,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(within_note_limit(note)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.queue.try_send((ev, tws.object_ref(&()))) {
            warn!(reason, error = %e, "Event not queued");
        }
    }
}

/// The API server refuses an Event whose note exceeds 1 kB; a termination
/// message may be 4 kB. Cut at a character boundary, marked with `…`.
fn within_note_limit(mut note: String) -> String {
    const MAX: usize = 1024;
    if note.len() > MAX {
        let mut end = MAX - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

/// Publishes queued Events, a few at a time, until the Context is dropped.
///
/// Warnings go through kube's `Recorder`, which folds repeats into one Event
/// with a series count (a failing reconcile retries). Normal Events (Created,
/// Updated, TopicCreated) happen once per change, so they are created
/// directly: the Recorder keeps every Event it published for 6 minutes to
/// spot repeats, which at 1,000 new streams is megabytes held for nothing.
async fn publish_events(
    client: Client,
    reporter: Reporter,
    queue: tokio::sync::mpsc::Receiver<(Event, ObjectReference)>,
) {
    let recorder = Recorder::new(client.clone(), reporter.clone());
    futures::stream::unfold(queue, |mut q| async move { q.recv().await.map(|e| (e, q)) })
        .for_each_concurrent(EVENT_CONCURRENCY, |(ev, reference)| {
            let recorder = recorder.clone();
            let (client, reporter) = (client.clone(), reporter.clone());
            async move {
                let published = match ev.type_ {
                    EventType::Warning => recorder.publish(&ev, &reference).await,
                    EventType::Normal => create_event(client, &reporter, &ev, reference).await,
                };
                if let Err(e) = published {
                    warn!(error = %e, reason = %ev.reason, "could not publish Event");
                }
            }
        })
        .await;
}

/// An events.k8s.io/v1 Event, as the Recorder would first create it.
async fn create_event(
    client: Client,
    reporter: &Reporter,
    ev: &Event,
    regarding: ObjectReference,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    let ns = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let now = k8s_openapi::jiff::Timestamp::now();
    let event = K8sEvent {
        metadata: ObjectMeta {
            // As the Recorder names them: the object, then the time in hex.
            name: Some(format!(
                "{}.{:x}",
                regarding.name.clone().unwrap_or_default(),
                now.as_nanosecond()
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        note: ev.note.clone(),
        type_: Some("Normal".into()),
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: reporter.instance.clone(),
        regarding: Some(regarding),
        ..Default::default()
    };
    Api::<K8sEvent>::namespaced(client, &ns)
        .create(&Default::default(), &event)
        .await
        .map(|_| ())
}

/// Events queued for publishing, at most; beyond that they are dropped (and
/// logged): an Event is a record, never worth blocking a reconcile for.
const EVENT_QUEUE: usize = 10_000;

/// Events published at once: a task per Event would let thousands of
/// requests pile up when thousands of streams are created together.
const EVENT_CONCURRENCY: usize = 4;
