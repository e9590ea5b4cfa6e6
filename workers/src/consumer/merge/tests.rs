use super::*;
use crate::consumer::tweet::ParsedTweet;
use crate::consumer::window::{WindowEngine, WindowSpec};
use proptest::prelude::*;
use std::borrow::Cow;
use std::time::Duration;

const W: WindowKey = WindowKey {
    start_ms: 0,
    end_ms: 10_000,
};

fn agg(count: u64, author: &str) -> Aggregate {
    let mut a = Aggregate::default();
    for _ in 0..count {
        a.add(&ParsedTweet {
            author_id: Some(Cow::Borrowed(author)),
            ..ParsedTweet::default()
        });
    }
    a
}

fn partial(window: WindowKey, partitions: &[i32], count: u64) -> Partial {
    Partial {
        window,
        sources: 0,
        partitions: partitions.iter().copied().collect(),
        watermarks: BTreeMap::new(),
        aggregate: agg(count, &format!("{partitions:?}")),
        piece: None,
    }
}

fn counts(out: &[(WindowKey, Aggregate)]) -> Vec<(WindowKey, u64)> {
    out.iter().map(|(k, a)| (*k, a.count)).collect()
}

#[test]
fn final_once_every_partition_is_covered() {
    let mut m = Merger::new(3).unwrap();
    assert_eq!(m.offer(partial(W, &[0, 1], 2)), Ok(Offer::Accepted));
    assert!(m.take_final().is_empty());
    assert_eq!(m.offer(partial(W, &[2], 5)), Ok(Offer::Accepted));
    let out = m.take_final();
    assert_eq!(counts(&out), vec![(W, 7)]);
    assert_eq!(out[0].1.authors.len(), 2);
    assert_eq!(m.pending_windows(), 0);
}

#[test]
fn a_replayed_partial_is_counted_once() {
    let mut m = Merger::new(2).unwrap();
    assert_eq!(m.offer(partial(W, &[0], 2)), Ok(Offer::Accepted));
    assert_eq!(m.offer(partial(W, &[0], 2)), Ok(Offer::Duplicate));
    assert_eq!(m.offer(partial(W, &[1], 3)), Ok(Offer::Accepted));
    assert_eq!(counts(&m.take_final()), vec![(W, 5)]);
    // After the window is final, a replay is recognised and dropped.
    assert_eq!(m.offer(partial(W, &[1], 3)), Ok(Offer::Stale));
    assert!(m.take_final().is_empty());
}

#[test]
fn overlapping_replays_never_count_a_partition_twice() {
    let mut m = Merger::new(3).unwrap();
    m.offer(partial(W, &[0, 1], 10)).unwrap();
    // After a rebalance partition 1 was replayed together with partition 2.
    m.offer(partial(W, &[1, 2], 20)).unwrap();
    assert!(m.take_final().is_empty(), "no disjoint cover yet");
    m.offer(partial(W, &[2], 4)).unwrap();
    assert_eq!(counts(&m.take_final()), vec![(W, 14)]);
}

#[test]
fn partitions_without_data_can_be_declared() {
    let mut m = Merger::new(2).unwrap();
    m.offer(partial(W, &[0], 2)).unwrap();
    m.no_data(W, 1).unwrap();
    assert_eq!(counts(&m.take_final()), vec![(W, 2)]);
}

#[test]
fn a_closed_source_without_a_partial_contributes_nothing() {
    let mut m = Merger::new(2).unwrap();
    let later = WindowKey {
        start_ms: 10_000,
        end_ms: 20_000,
    };
    m.offer(partial(W, &[0], 2)).unwrap();
    m.offer(partial(later, &[0], 1)).unwrap();
    m.source_closed(1, W.end_ms - 1, 0).unwrap();
    assert!(m.take_final().is_empty());
    m.source_closed(1, W.end_ms, 0).unwrap();
    assert_eq!(counts(&m.take_final()), vec![(W, 2)]);
    // A lower closed_until does not undo a higher one.
    m.source_closed(1, 0, 0).unwrap();
    m.source_closed(1, later.end_ms, 0).unwrap();
    assert_eq!(counts(&m.take_final()), vec![(later, 1)]);
}

#[test]
fn a_closed_source_with_a_partial_still_needs_it() {
    let mut m = Merger::new(2).unwrap();
    m.source_closed(0, 1_000_000, 0).unwrap();
    m.offer(partial(W, &[0, 1], 3)).unwrap();
    m.source_closed(1, 1_000_000, 0).unwrap();
    assert_eq!(counts(&m.take_final()), vec![(W, 3)]);
    // Every source is past W now: anything for it is a replay.
    assert_eq!(m.offer(partial(W, &[1], 3)), Ok(Offer::Stale));
    m.no_data(W, 0).unwrap();
    assert_eq!(m.pending_windows(), 0);
}

#[test]
fn windows_come_out_in_order() {
    let mut m = Merger::new(1).unwrap();
    let keys: Vec<WindowKey> = [30, 10, 20]
        .map(|s| WindowKey {
            start_ms: s * 1_000,
            end_ms: (s + 10) * 1_000,
        })
        .to_vec();
    for k in &keys {
        m.offer(partial(*k, &[0], 1)).unwrap();
    }
    let got: Vec<i64> = m.take_final().iter().map(|(k, _)| k.start_ms).collect();
    assert_eq!(got, vec![10_000, 20_000, 30_000]);
}

#[test]
fn bad_input_is_an_error() {
    assert_eq!(Merger::new(0).unwrap_err(), MergeError::NoPartitions);
    let mut m = Merger::new(2).unwrap();
    assert_eq!(m.offer(partial(W, &[], 1)), Err(MergeError::EmptyPartial));
    assert!(m.no_data(W, -1).is_err());
    assert!(m.source_closed(-5, 0, 0).is_err());
    assert_eq!(m.pending_windows(), 0);
    assert_eq!(m.source_partitions(), 2);
}

/// The topic grew from 2 to 3 partitions: a partial naming partition 2 (it
/// was dropped as malformed before, and its window published without it) is
/// accepted, and so is a sender's word that there are now 4: windows wait
/// for every partition either names.
#[test]
fn a_grown_topic_makes_windows_wait_for_the_new_partitions() {
    let mut m = Merger::new(2).unwrap();
    assert_eq!(m.offer(partial(W, &[0, 2], 5)), Ok(Offer::Accepted));
    assert_eq!(m.source_partitions(), 3);
    m.source_closed(1, W.end_ms, 4).unwrap();
    assert_eq!(m.source_partitions(), 4);
    assert!(m.take_final().is_empty(), "partition 3 has not closed W");
    m.source_closed(3, W.end_ms, 4).unwrap();
    assert_eq!(counts(&m.take_final()), vec![(W, 5)]);
}

#[test]
fn a_restored_final_window_is_stale() {
    let mut m = Merger::new(2).unwrap();
    m.offer(partial(W, &[0], 1)).unwrap();
    m.restore_final(W);
    assert_eq!(m.pending_windows(), 0);
    assert_eq!(m.offer(partial(W, &[1], 1)).unwrap(), Offer::Stale);
    assert!(m.take_final().is_empty());
}

#[test]
fn partial_round_trips_through_json() {
    let mut p = partial(W, &[0, 3], 2);
    p.watermarks = BTreeMap::from([(0, 9_000), (3, 12_000)]);
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<Partial>(&json).unwrap(), p);
}

/// Events: (partition, event time ms, author, hashtag, likes, sentiment micros).
type Event = (i32, i64, u8, u8, u16, i32);

fn tweet_of(ev: &Event) -> (String, String) {
    (format!("a{}", ev.2), format!("t{}", ev.3))
}

fn ingest_all(e: &mut WindowEngine, events: &[&Event]) {
    for ev in events {
        let (author, tag) = tweet_of(ev);
        let t = ParsedTweet {
            author_id: Some(Cow::Borrowed(&author)),
            lang: Some(Cow::Borrowed(if ev.3 % 2 == 0 { "en" } else { "fr" })),
            hashtags: vec![Cow::Borrowed(&tag)],
            likes: u64::from(ev.4),
            sentiment: f64::from(ev.5) / 1e6,
            ..ParsedTweet::default()
        };
        let r = e.ingest(ev.0, ev.1, &t, 0).unwrap();
        assert_eq!(r.late, 0);
    }
}

fn arb_case() -> impl Strategy<Value = (i32, Vec<i32>, Vec<Event>)> {
    (1i32..6).prop_flat_map(|n| {
        (
            Just(n),
            // Which replica reads each partition.
            prop::collection::vec(0i32..3, n as usize),
            prop::collection::vec(
                (
                    0..n,
                    -30_000i64..30_000,
                    0u8..8,
                    0u8..6,
                    0u16..500,
                    -1_000_000i32..=1_000_000,
                ),
                0..50,
            ),
        )
    })
}

proptest! {
    #[test]
    fn merged_partials_equal_one_engine_over_everything(
        (n, owner, events) in arb_case(),
        (size_s, slide_s) in (1u64..4, 1u64..3).prop_map(|(s, h)| (s * h, s)),
        replay in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        order in any::<u64>(),
        take_every in 1usize..5,
        piece_budget in prop::option::of(200usize..1_500),
    ) {
        // Lateness beyond the span of event times: replicas see different
        // watermarks, and this property is about merging, not lateness.
        let spec = WindowSpec {
            size: Duration::from_secs(size_s),
            slide: Duration::from_secs(slide_s),
            allowed_lateness: Duration::from_secs(3_600),
            idle_timeout: Duration::from_secs(3_600),
            max_future_skew: None,
        };
        let mut single = WindowEngine::new(spec).unwrap();
        ingest_all(&mut single, &events.iter().collect::<Vec<_>>());
        let expected = single.flush_all();

        let mut partials = Vec::new();
        for replica in 0..3 {
            let mine: BTreeSet<i32> = (0..n).filter(|p| owner[*p as usize] == replica).collect();
            if mine.is_empty() {
                continue;
            }
            let mut e = WindowEngine::new(spec).unwrap();
            // Replicas see their partitions' tweets in reverse, unlike `single`.
            let evs: Vec<&Event> = events.iter().rev().filter(|ev| mine.contains(&ev.0)).collect();
            ingest_all(&mut e, &evs);
            let watermarks = e.partition_watermarks();
            for (window, aggregate) in e.flush_all() {
                partials.push(Partial {
                    window,
                    sources: 0,
                    partitions: mine.clone(),
                    watermarks: watermarks.clone(),
                    aggregate,
                    piece: None,
                });
            }
        }
        for i in &replay {
            if !partials.is_empty() {
                let p = partials[i.index(partials.len())].clone();
                partials.push(p);
            }
        }
        // Partials over the budget travel as pieces, shuffled with the rest.
        if let Some(budget) = piece_budget {
            partials = partials.iter().flat_map(|p| pieces_of(p, budget)).collect();
        }
        // A deterministic shuffle driven by `order`.
        let len = partials.len();
        for i in 0..len {
            let j = (order.rotate_left(i as u32) % len as u64) as usize;
            partials.swap(i, j);
        }

        let mut m = Merger::new(n).unwrap();
        let mut got = Vec::new();
        for (i, p) in partials.into_iter().enumerate() {
            m.offer(p).unwrap();
            if i % take_every == 0 {
                got.extend(m.take_final());
            }
        }
        for p in 0..n {
            m.source_closed(p, i64::MAX, 0).unwrap();
        }
        got.extend(m.take_final());
        prop_assert_eq!(m.pending_windows(), 0);
        got.sort_by_key(|(k, _)| *k);
        prop_assert_eq!(got, expected);
    }
}

fn pieces_of(p: &Partial, budget: usize) -> Vec<Partial> {
    crate::consumer::partials::encode_within(p.clone(), 0, budget)
        .into_iter()
        .map(|json| match serde_json::from_slice(&json) {
            Ok(crate::consumer::partials::InternalRecord::Partial { partial, .. }) => *partial,
            other => panic!("not a partial: {other:?}"),
        })
        .collect()
}

#[test]
fn a_split_partial_counts_once_all_its_pieces_are_in() {
    let mut big = partial(W, &[0], 3);
    big.aggregate
        .authors
        .extend((0..400).map(|i| format!("{i:019}")));
    let pieces = pieces_of(&big, 4_000);
    assert!(pieces.len() >= 3, "{} pieces", pieces.len());
    let mut m = Merger::new(2).unwrap();
    assert_eq!(m.offer(partial(W, &[1], 2)), Ok(Offer::Accepted));
    // Every piece but the first, one of them twice: not final yet.
    for p in pieces.iter().skip(1).rev() {
        assert_eq!(m.offer(p.clone()), Ok(Offer::Accepted));
    }
    assert_eq!(m.offer(pieces[1].clone()), Ok(Offer::Duplicate));
    assert!(m.take_final().is_empty());
    assert_eq!(m.offer(pieces[0].clone()), Ok(Offer::Accepted));
    let out = m.take_final();
    let mut want = big.aggregate.clone();
    want.merge(&partial(W, &[1], 2).aggregate);
    assert_eq!(out, vec![(W, want)]);
    // The whole partial replayed after the pieces is a replay.
    assert_eq!(m.offer(big), Ok(Offer::Stale));
}

#[test]
fn pieces_of_two_emissions_do_not_mix() {
    let mut a = partial(W, &[0], 3);
    a.aggregate
        .authors
        .extend((0..300).map(|i| format!("{i:019}")));
    let mut b = a.clone();
    b.aggregate.authors.insert("someone-else".into());
    let (pa, pb) = (pieces_of(&a, 4_000), pieces_of(&b, 4_000));
    let mut m = Merger::new(1).unwrap();
    // Half of one emission, all of the other: the complete one counts.
    m.offer(pa[0].clone()).unwrap();
    for p in &pb {
        m.offer(p.clone()).unwrap();
    }
    for p in pa.iter().skip(1) {
        assert_eq!(m.offer(p.clone()), Ok(Offer::Duplicate));
    }
    assert_eq!(m.take_final(), vec![(W, b.aggregate)]);
}
