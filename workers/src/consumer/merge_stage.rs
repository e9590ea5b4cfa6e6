//! The merge stage: reads the partials topic (its own consumer group,
//! read_committed), completes windows with a [`Merger`] per partials
//! partition, and publishes each final window once: to the output topic in
//! the same transaction as the partials offsets, and/or as a printed line.
//!
//! A partials partition's commit lists, in its metadata, the windows already
//! published whose partials sit at or after the committed offset; whoever
//! replays the partition next marks them final first, so they are not
//! published again from a partial replay.

use crate::consumer::merge::{Merger, Offer};
use crate::consumer::metrics::Metrics;
use crate::consumer::offsets;
use crate::consumer::partials::InternalRecord;
use crate::consumer::stage::{Batch, Committed, OutRecord, Processor};
use crate::consumer::window::WindowSpec;
use crate::consumer::window_key::WindowKey;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) struct MergeStage {
    stream: String,
    top_n: usize,
    size_ms: i64,
    /// The window shape's name, the last part of every output key.
    generation: String,
    source_partitions: i32,
    output_topic: Option<Arc<str>>,
    print: bool,
    /// Hand final windows to the stage's sink ([`Batch::windows`]).
    store: bool,
    parts: BTreeMap<i32, Part>,
    metrics: Arc<Metrics>,
}

struct Part {
    merger: Merger,
    /// Pending windows: offset of their first accepted partial.
    first_offset: BTreeMap<WindowKey, i64>,
    /// Every window with a record here: the offset of its last one.
    last_offset: BTreeMap<WindowKey, i64>,
    /// Pending windows: when their latest partial was closed at its source.
    closed_at: BTreeMap<WindowKey, i64>,
    next: i64,
    committed: Option<(i64, String)>,
    in_flight: Option<(i64, String)>,
}

impl MergeStage {
    pub(crate) fn new(
        stream: &str,
        top_n: usize,
        window: &WindowSpec,
        source_partitions: i32,
        output_topic: Option<&str>,
        print: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        MergeStage {
            stream: stream.to_owned(),
            top_n,
            size_ms: window.size.as_millis() as i64,
            generation: window.generation(),
            source_partitions,
            output_topic: output_topic.map(Arc::from),
            print,
            store: false,
            parts: BTreeMap::new(),
            metrics,
        }
    }
}

impl MergeStage {
    /// Whether final windows also go to the stage's sink.
    pub(crate) fn storing(mut self, store: bool) -> Self {
        self.store = store;
        self
    }
}

/// The output record key of a window: `<stream>@<start>/<generation>`
/// (`demo@2026-01-01T12:00:10Z/w10s`), unique across window changes.
pub(crate) fn output_key(stream: &str, window_start: &str, generation: &str) -> String {
    format!("{stream}@{window_start}/{generation}")
}

impl Processor for MergeStage {
    fn reset(&mut self, assigned: &[Committed], _now_ms: i64) {
        self.parts.clear();
        for c in assigned {
            let Ok(mut merger) = Merger::new(self.source_partitions) else {
                continue;
            };
            let mut last_offset = BTreeMap::new();
            for start_ms in offsets::decode_merge(&c.metadata) {
                let w = WindowKey {
                    start_ms,
                    end_ms: start_ms + self.size_ms,
                };
                merger.restore_final(w);
                last_offset.insert(w, c.offset);
            }
            self.parts.insert(
                c.partition,
                Part {
                    merger,
                    first_offset: BTreeMap::new(),
                    last_offset,
                    closed_at: BTreeMap::new(),
                    next: c.offset,
                    committed: Some((c.offset, c.metadata.clone())),
                    in_flight: None,
                },
            );
        }
    }

    type Prepared<'a> = Result<InternalRecord, serde_json::Error>;

    fn prepare<'a>(payload: Option<&'a [u8]>, _stream: Option<&'a [u8]>) -> Self::Prepared<'a> {
        serde_json::from_slice(payload.unwrap_or_default())
    }

    fn record(&mut self, partition: i32, offset: i64, record: Self::Prepared<'_>, _now_ms: i64) {
        let Some(part) = self.parts.get_mut(&partition) else {
            return;
        };
        part.next = part.next.max(offset + 1);
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                self.metrics.records_malformed.inc();
                tracing::warn!(partition, offset, error = %e, "skipping malformed partials record");
                return;
            }
        };
        let result = match record {
            InternalRecord::Partial {
                partial,
                closed_at_ms,
            } => {
                let w = partial.window;
                let slot = part.last_offset.entry(w).or_insert(offset);
                *slot = (*slot).max(offset);
                let (partitions, count, late) = (
                    partial.partitions.clone(),
                    partial.aggregate.count,
                    partial.aggregate.late,
                );
                part.merger.offer(*partial).map(|offer| {
                    if offer == Offer::Stale {
                        tracing::debug!(
                            partition,
                            offset,
                            start = w.start_ms,
                            ?partitions,
                            count,
                            late,
                            "partial for a window already final"
                        );
                    }
                    if offer == Offer::Accepted {
                        part.first_offset.entry(w).or_insert(offset);
                        let c = part.closed_at.entry(w).or_insert(closed_at_ms);
                        *c = (*c).max(closed_at_ms);
                    }
                })
            }
            InternalRecord::ClosedAll { until, sources } => {
                until.into_iter().try_for_each(|(source, until_ms)| {
                    part.merger.source_closed(source, until_ms, sources)
                })
            }
            InternalRecord::Closed {
                partition: source,
                until_ms,
                sources,
            } => part.merger.source_closed(source, until_ms, sources),
        };
        if let Err(e) = result {
            self.metrics.records_malformed.inc();
            tracing::warn!(partition, offset, error = %e, "partials record does not fit the source topic");
        }
    }

    fn cycle(&mut self, now_ms: i64) -> Batch {
        let mut batch = Batch::default();
        for (q, part) in &mut self.parts {
            for (window, aggregate) in part.merger.take_final() {
                part.first_offset.remove(&window);
                let closed_at = part.closed_at.remove(&window);
                let result = aggregate.result(&self.stream, window, self.top_n);
                let span = tracing::info_span!("window", stream = %self.stream, start = %result.window_start);
                let _entered = span.enter();
                tracing::info!(
                    count = result.count,
                    late = result.late,
                    partials_partition = q,
                    "window final"
                );
                self.metrics.windows_emitted.inc();
                if let Some(at) = closed_at {
                    self.metrics
                        .emit_latency_seconds
                        .observe((now_ms - at).max(0) as f64 / 1000.0);
                }
                if let Some(topic) = &self.output_topic {
                    match serde_json::to_vec(&result) {
                        Ok(payload) => batch.records.push(OutRecord {
                            topic: topic.clone(),
                            partition: None,
                            key: output_key(&self.stream, &result.window_start, &self.generation),
                            payload,
                        }),
                        Err(e) => tracing::error!(error = %e, "cannot serialise a window result"),
                    }
                }
                if self.print {
                    batch.lines.push(result.to_string());
                }
                if self.store {
                    batch.windows.push(result);
                }
            }
            let offset = part
                .first_offset
                .values()
                .min()
                .copied()
                .unwrap_or(part.next);
            // Windows whose records are all before the commit point cannot be
            // replayed by the next owner, so need not be listed.
            part.last_offset.retain(|_, last| *last >= offset);
            let mut listed: Vec<i64> = part
                .last_offset
                .keys()
                .filter(|w| !part.first_offset.contains_key(w))
                .map(|w| w.start_ms)
                .collect();
            let mut metadata = offsets::encode_merge(listed.iter().copied());
            if metadata.len() > offsets::MAX_METADATA_BYTES {
                tracing::warn!(
                    windows = listed.len(),
                    "too many published windows to list in the commit; keeping the newest"
                );
                while metadata.len() > offsets::MAX_METADATA_BYTES && !listed.is_empty() {
                    listed.remove(0);
                    metadata = offsets::encode_merge(listed.iter().copied());
                }
            }
            let state = (offset, metadata);
            if part.committed.as_ref() != Some(&state) || !batch.records.is_empty() {
                batch.offsets.push((*q, state.0, state.1.clone()));
            }
            part.in_flight = Some(state);
        }
        if batch.records.is_empty() && batch.lines.is_empty() && batch.offsets.is_empty() {
            return Batch::default();
        }
        batch
    }

    fn committed(&mut self) {
        for part in self.parts.values_mut() {
            if let Some(s) = part.in_flight.take() {
                part.committed = Some(s);
            }
        }
    }

    fn position(&self, partition: i32) -> Option<i64> {
        self.parts.get(&partition).map(|p| p.next)
    }
}
