use super::*;
use crate::consumer::window_key::WindowKey;
use std::time::Duration;

const BASE_MS: i64 = 1_800_000_000_000;

fn stage() -> AggregateStage {
    let spec = WindowSpec {
        size: Duration::from_secs(2),
        slide: Duration::from_secs(2),
        allowed_lateness: Duration::ZERO,
        idle_timeout: Duration::from_secs(60),
        max_future_skew: None,
    };
    AggregateStage::new(
        "s",
        spec,
        TimeMode::Event,
        "partials",
        1,
        1,
        Arc::new(Metrics::new()),
    )
    .expect("valid spec")
}

fn tweet(id: u32, at_ms: i64) -> Vec<u8> {
    let created = chrono::DateTime::from_timestamp_millis(at_ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    serde_json::to_vec(
        &serde_json::json!({"id": id.to_string(), "text": "t", "created_at": created}),
    )
    .unwrap_or_default()
}

fn feed(stage: &mut AggregateStage, offset: i64, at_ms: i64) {
    let payload = tweet(offset as u32, at_ms);
    let prepared = AggregateStage::prepare(Some(&payload), None);
    stage.record(0, offset, prepared, BASE_MS + 10_000);
}

fn partials(batch: &Batch) -> Vec<WindowKey> {
    batch
        .records
        .iter()
        .filter_map(|r| match serde_json::from_slice(&r.payload) {
            Ok(InternalRecord::Partial { partial, .. }) => Some(partial.window),
            _ => None,
        })
        .collect()
}

fn read_until(batch: &Batch) -> Option<i64> {
    batch
        .offsets
        .iter()
        .find(|(p, _, _)| *p == 0)
        .and_then(|(_, _, m)| SourceCommit::decode(m).read_until)
}

/// The previous owner had read offsets 0..3 and published windows up to
/// `BASE_MS`. Closing a window at offset 2 would commit `read=2`, and the
/// owner after that would count offset 2 late for windows its first owner
/// had already published it in.
#[test]
fn no_window_closes_before_the_replay_reaches_what_the_previous_owner_read() {
    let mut s = stage();
    let commit = format!("v1;closed={BASE_MS};read=3");
    s.reset(
        &[Committed {
            partition: 0,
            offset: 0,
            metadata: commit,
        }],
        BASE_MS + 10_000,
    );
    feed(&mut s, 0, BASE_MS + 500);
    feed(&mut s, 1, BASE_MS + 2_500);
    let during = s.cycle(BASE_MS + 10_000);
    assert_eq!(
        partials(&during),
        vec![],
        "a window closed during the replay"
    );
    assert_eq!(read_until(&during), Some(3));
    s.committed();
    feed(&mut s, 2, BASE_MS + 2_600);
    let after = s.cycle(BASE_MS + 10_000);
    let first = WindowKey {
        start_ms: BASE_MS,
        end_ms: BASE_MS + 2_000,
    };
    assert_eq!(partials(&after), vec![first]);
    assert!(read_until(&after) >= Some(3), "{:?}", read_until(&after));
}
