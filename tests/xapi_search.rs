//! The producer's search client against the local X API v2 server
//! (`support::xapi`): paging, cursors, authentication, credential rotation,
//! rate limits and faults. No Kafka needed.
//!
//! Time: the poller sleeps through an injected clock that advances virtual
//! time instantly and records every wait, so rate-limit resets and backoffs
//! are asserted exactly without real waiting.

// This crate is test code throughout; clippy's allow-unwrap-in-tests only
// covers #[test] functions, not the helpers they share.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use twitterstream_contract::producer::SearchEndpoint;
use twitterstream_tests::xapi::{
    Fault, SeenAuth, TweetSpec, UserKeys, XApiServer, hmac_sha1_signature, signature_base_string,
};
use twitterstream_workers::producer::clock::Clock;
use twitterstream_workers::producer::credentials::{
    CredentialSource, Credentials, CredentialsProvider, Secret, UserCredentials,
};
use twitterstream_workers::producer::search::{Batch, SearchConfig, SearchEvent, SearchPoller};
use twitterstream_workers::producer::xapi::{Endpoint, XApiClient};

/// Virtual time: `sleep` moves `now` forward at once and records the wait.
struct FakeClock {
    now: Mutex<DateTime<Utc>>,
    sleeps: Mutex<Vec<Duration>>,
}

impl FakeClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(Utc::now()),
            sleeps: Mutex::new(Vec::new()),
        })
    }

    fn at(now: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(now),
            sleeps: Mutex::new(Vec::new()),
        })
    }
    fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap().clone()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        *self.now.lock().unwrap() += TimeDelta::from_std(d).unwrap();
        self.sleeps.lock().unwrap().push(d);
        // A real millisecond keeps retry loops from starving the test task.
        Box::pin(tokio::time::sleep(Duration::from_millis(1)))
    }
}

const CK: &str = "consumer-key-1";
const CS: &str = "consumer-secret-1";
const AT: &str = "12345-access-token-1";
const ATS: &str = "access-token-secret-1";

fn user_creds(cs: &str) -> Credentials {
    Credentials {
        user: Some(UserCredentials {
            consumer_key: Secret::new(CK),
            consumer_secret: Secret::new(cs),
            access_token: Secret::new(AT),
            access_token_secret: Secret::new(ATS),
        }),
        bearer: None,
    }
}

async fn server() -> XApiServer {
    let s = XApiServer::start().await;
    s.set_user(Some(UserKeys::new(CK, CS, AT, ATS)));
    s
}

type Events = Arc<Mutex<Vec<SearchEvent>>>;

fn poller(
    server: &XApiServer,
    credentials: CredentialsProvider,
    config: SearchConfig,
    clock: &Arc<FakeClock>,
    timeout: Duration,
) -> (SearchPoller, Events) {
    let events: Events = Arc::default();
    let sink = events.clone();
    let client = XApiClient::new(&server.base_url(), timeout).unwrap();
    let p = SearchPoller::new(client, credentials, config)
        .with_clock(clock.clone())
        .on_event(move |e| sink.lock().unwrap().push(e.clone()));
    (p, events)
}

/// A poller with the server's user-context credentials and a 5 s timeout.
fn user_poller(
    server: &XApiServer,
    config: SearchConfig,
    clock: &Arc<FakeClock>,
) -> (SearchPoller, Events) {
    poller(
        server,
        CredentialsProvider::fixed(user_creds(CS)),
        config,
        clock,
        Duration::from_secs(5),
    )
}

fn config(keyword: &str) -> SearchConfig {
    SearchConfig {
        poll_interval: Duration::from_secs(30),
        ..SearchConfig::new(keyword)
    }
}

/// Runs one poll to its end, then commits the cursor as a producer does
/// after delivery. Returns the ids in delivery order and the batches.
async fn poll(p: &mut SearchPoller) -> (Vec<String>, Vec<Batch>) {
    let mut ids = Vec::new();
    let mut batches = Vec::new();
    loop {
        let b = p.next_batch().await.unwrap();
        ids.extend(b.tweets.iter().map(|t| t.id().to_owned()));
        let end = b.end_of_poll;
        if let Some(c) = &b.commit {
            assert!(end, "only the last page of a poll carries the cursor");
            p.commit(c);
        }
        batches.push(b);
        if end {
            return (ids, batches);
        }
    }
}

/// `n` matching tweets, one a minute, ending `ago` before now.
fn corpus(n: usize, ago: TimeDelta, text: &str) -> Vec<TweetSpec> {
    let end = Utc::now() - ago;
    (0..n)
        .map(|i| {
            TweetSpec::new(
                end - TimeDelta::minutes(i as i64),
                (i % 4000) as u16,
                format!("{text} number {i}"),
            )
            .likes(i as u64 % 10)
        })
        .collect()
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

fn assert_no_duplicates(ids: &[String]) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate tweets delivered");
}

#[test]
fn server_signature_reproduces_x_documented_example() {
    // X's "Creating a signature" walkthrough, checked with the server's own
    // implementation (independent of the producer's signing).
    let params: Vec<(String, String)> = [
        (
            "status",
            "Hello Ladies + Gentlemen, a signed OAuth request!",
        ),
        ("include_entities", "true"),
        ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
        ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "1318622958"),
        (
            "oauth_token",
            "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
        ),
        ("oauth_version", "1.0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let base = signature_base_string(
        "POST",
        "https://api.twitter.com/1.1/statuses/update.json",
        &params,
    );
    assert!(base.starts_with("POST&https%3A%2F%2Fapi.twitter.com%2F1.1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog"));
    assert_eq!(
        hmac_sha1_signature(
            &base,
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"
        ),
        "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
    );
}

#[tokio::test]
async fn polls_page_and_return_every_tweet_once() {
    let s = server().await;
    let first = s.add(corpus(250, TimeDelta::hours(1), "rust is fun"));
    // Noise the query must exclude.
    s.add(corpus(5, TimeDelta::hours(2), "golang only"));
    s.add([
        TweetSpec::new(Utc::now() - TimeDelta::minutes(90), 1, "rust retweeted").retweet(),
        TweetSpec::new(Utc::now() - TimeDelta::minutes(91), 1, "rust auf deutsch").lang("de"),
    ]);
    let clock = FakeClock::new();
    let cfg = SearchConfig {
        language: Some("en".into()),
        ..config("rust")
    };
    let (mut p, _) = user_poller(&s, cfg, &clock);

    let (ids, batches) = poll(&mut p).await;
    assert_eq!(batches.len(), 3, "250 tweets at 100 per page");
    assert_no_duplicates(&ids);
    assert_eq!(set(&ids), set(&first));
    // Newest first across pages, as X pages.
    let nums: Vec<u64> = ids.iter().map(|i| i.parse().unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[0] > w[1]));
    let newest = nums[0].to_string();
    assert_eq!(p.since_id(), Some(newest.as_str()));

    let reqs = s.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.path, "/2/tweets/search/recent");
        assert_eq!(r.param("query"), Some("rust lang:en -is:retweet"));
        assert_eq!(
            r.param("tweet.fields"),
            Some("created_at,lang,author_id,public_metrics,entities")
        );
        assert_eq!(r.param("max_results"), Some("100"));
        assert_eq!(r.param("since_id"), None);
        assert!(matches!(r.auth, SeenAuth::OAuth1 { .. }), "{:?}", r.auth);
    }
    assert_eq!(reqs[0].param("next_token"), None);
    assert!(reqs[1].param("next_token").is_some());

    // Nothing new: an empty poll that leaves the cursor alone.
    let (ids, batches) = poll(&mut p).await;
    assert!(ids.is_empty());
    assert_eq!(batches[0].commit, None);
    assert_eq!(s.requests()[3].param("since_id"), Some(newest.as_str()));
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(30)],
        "one poll interval"
    );

    // New tweets arrive: exactly those come back.
    let newer = s.add(corpus(30, TimeDelta::seconds(30), "more rust"));
    let (ids, _) = poll(&mut p).await;
    assert_eq!(set(&ids), set(&newer));
    assert_no_duplicates(&ids);
}

#[tokio::test]
async fn tweets_arriving_mid_poll_come_in_the_next_poll() {
    let s = server().await;
    let old = s.add(corpus(150, TimeDelta::hours(1), "rust"));
    let clock = FakeClock::new();
    let (mut p, _) = user_poller(&s, config("rust"), &clock);
    let page1 = p.next_batch().await.unwrap();
    assert!(!page1.end_of_poll);
    assert_eq!(
        page1.commit, None,
        "the cursor waits for the poll's last page"
    );
    // Arrives while the poll is paging: must not be lost nor duplicated.
    let late = s.add(corpus(3, TimeDelta::seconds(20), "rust late"));
    let page2 = p.next_batch().await.unwrap();
    assert!(page2.end_of_poll);
    let commit = page2.commit.clone().unwrap();
    assert_eq!(commit, page1.tweets[0].id(), "first page's newest_id");
    p.commit(&commit);
    let mut got: Vec<String> = page1
        .tweets
        .iter()
        .chain(&page2.tweets)
        .map(|t| t.id().to_owned())
        .collect();
    assert_eq!(set(&got), set(&old));
    let (next, _) = poll(&mut p).await;
    assert_eq!(set(&next), set(&late));
    got.extend(next);
    assert_no_duplicates(&got);
}

#[tokio::test]
async fn uncommitted_poll_is_fetched_again() {
    let s = server().await;
    let ids = s.add(corpus(20, TimeDelta::hours(1), "rust"));
    let clock = FakeClock::new();
    let (mut p, _) = user_poller(&s, config("rust"), &clock);
    // Delivery failed: the caller does not commit, so nothing is skipped.
    let b = p.next_batch().await.unwrap();
    assert!(b.commit.is_some());
    let again = p.next_batch().await.unwrap();
    let again: Vec<String> = again.tweets.iter().map(|t| t.id().to_owned()).collect();
    assert_eq!(set(&again), set(&ids));
}

/// Item 7 of #12: a poll delivered in parts. Naming a part (`open_part`)
/// moves nothing; only `commit_part`, after the part is delivered, does. A
/// part that was not delivered is fetched again; after one that was, the
/// next poll asks only for the older rest (`until_id`) and then moves the
/// cursor past the whole poll.
#[tokio::test]
async fn a_poll_delivered_in_parts_resumes_after_the_last_delivered_part() {
    let s = server().await;
    let all = s.add(corpus(250, TimeDelta::hours(1), "rust"));
    let clock = FakeClock::new();
    let (mut p, _) = user_poller(&s, config("rust"), &clock);
    let ids = |b: &Batch| -> Vec<String> { b.tweets.iter().map(|t| t.id().to_owned()).collect() };
    let oldest = |v: &[String]| {
        v.iter()
            .min_by_key(|i| i.parse::<u64>().unwrap())
            .unwrap()
            .clone()
    };

    // The first page's part could not be delivered.
    let first = p.next_batch().await.unwrap();
    assert!(!first.end_of_poll);
    assert!(p.open_part(&oldest(&ids(&first))).is_some());
    assert_eq!(p.open_poll(), None, "naming a part commits nothing");
    p.abandon_poll();
    let again = p.next_batch().await.unwrap();
    assert_eq!(ids(&again), ids(&first), "the undelivered part comes again");
    assert_eq!(s.requests().last().unwrap().param("until_id"), None);

    // Delivered this time.
    let open = p.open_part(&oldest(&ids(&again))).unwrap();
    p.commit_part(open.clone());
    assert_eq!(p.open_poll(), Some(&open));
    // The process goes away mid-poll; the next poll fetches the rest only.
    p.abandon_poll();
    let (rest, batches) = poll(&mut p).await;
    let req = s
        .requests()
        .iter()
        .rev()
        .find(|r| r.param("next_token").is_none())
        .cloned()
        .unwrap();
    assert_eq!(req.param("until_id"), Some(open.until.as_str()));
    let mut got = ids(&again);
    got.extend(rest);
    assert_no_duplicates(&got);
    assert_eq!(set(&got), set(&all));
    assert!(batches.last().unwrap().commit.is_some());
    assert_eq!(p.since_id(), Some(open.newest.as_str()));
    assert_eq!(p.open_poll(), None);
}

#[tokio::test]
async fn raw_tweet_json_is_kept_exactly() {
    let s = server().await;
    s.add([TweetSpec::new(
        Utc::now() - TimeDelta::minutes(5),
        7,
        "rust #rustlang tweet",
    )
    .likes(3)
    .extra("note_tweet", json!({"text": "a long form body"}))]);
    let clock = FakeClock::new();
    let (mut p, _) = user_poller(&s, config("rust"), &clock);
    let b = p.next_batch().await.unwrap();
    let t = &b.tweets[0];
    let raw: Value = serde_json::from_str(t.raw_json()).unwrap();
    assert_eq!(raw["note_tweet"]["text"], "a long form body");
    assert_eq!(raw["edit_history_tweet_ids"][0], t.id());
    assert_eq!(raw["public_metrics"]["impression_count"], 30);
    assert_eq!(t.tweet.like_count(), 3);
    assert_eq!(
        t.tweet.entities.as_ref().unwrap().hashtags[0].tag,
        "rustlang"
    );
    // The server returns exactly what was asked for: no unrequested fields.
    assert!(raw.get("referenced_tweets").is_none());
}

#[tokio::test]
async fn bad_signature_gets_401_and_is_reported() {
    let s = server().await;
    s.add(corpus(5, TimeDelta::hours(1), "rust"));
    let clock = FakeClock::new();
    let (mut p, events) = poller(
        &s,
        CredentialsProvider::fixed(user_creds("the-wrong-secret")),
        config("rust"),
        &clock,
        Duration::from_secs(5),
    );
    // The poller retries forever (a rotation may fix it); stop after a few.
    let outcome = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if p.stats().unauthorized >= 3 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), p.next_batch()).await;
        }
    })
    .await;
    assert!(outcome.is_ok(), "401s were not reported");
    let reqs = s.requests();
    assert!(reqs.len() >= 3);
    for r in &reqs {
        assert_eq!(r.status, 401);
        assert_eq!(r.auth, SeenAuth::Rejected("signature mismatch".into()));
    }
    let ev = events.lock().unwrap().clone();
    let unauthorized: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            SearchEvent::Unauthorized {
                status,
                auth,
                detail,
                retry_in,
            } => Some((*status, *auth, detail.clone(), *retry_in)),
            _ => None,
        })
        .collect();
    assert!(unauthorized.len() >= 3);
    assert_eq!(unauthorized[0].0, 401);
    assert_eq!(unauthorized[0].1, "oauth1-user-context");
    assert!(unauthorized[0].2.contains("Unauthorized"));
    // Backed off, growing: 5 s initial ceiling, equal jitter.
    assert!(unauthorized[0].3 >= Duration::from_millis(2500));
    assert!(unauthorized[2].3 >= Duration::from_secs(10));
    // No secret in what is reported.
    assert!(!format!("{ev:?}").contains("the-wrong-secret"));
}

/// Lays out `dir` like a kubelet-mounted Secret and rotates it atomically.
fn write_secret(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let gen_dir = dir.join(format!("..2025_gen_{generation}"));
    std::fs::create_dir_all(&gen_dir).unwrap();
    for (k, v) in files {
        std::fs::write(gen_dir.join(k), format!("{v}\n")).unwrap();
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(k), &link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..2025_gen_{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(twitterstream_tests::unique_name("tws-xapi-creds"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn rotated_secret_takes_effect_without_restart() {
    let s = server().await;
    let ids = s.add(corpus(12, TimeDelta::hours(1), "rust"));
    let dir = temp_dir();
    let files = |cs: &'static str| {
        [
            ("consumerKey", CK),
            ("consumerSecret", cs),
            ("accessToken", AT),
            ("accessTokenSecret", ATS),
        ]
    };
    write_secret(&dir, 1, &files("revoked-secret"));
    let provider = CredentialsProvider::new(CredentialSource::Dir(dir.clone())).unwrap();
    let clock = FakeClock::new();
    let (mut p, events) = poller(
        &s,
        provider.clone(),
        config("rust"),
        &clock,
        Duration::from_secs(5),
    );
    let task = tokio::spawn(async move {
        let b = p.next_batch().await.unwrap();
        (p, b)
    });
    twitterstream_tests::eventually("a 401 to be reported", Duration::from_secs(10), || {
        let seen = events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, SearchEvent::Unauthorized { status: 401, .. }));
        async move { seen.then_some(()) }
    })
    .await;
    write_secret(&dir, 2, &files(CS));
    let (p, batch) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the rotated secret was not picked up")
        .unwrap();
    let got: Vec<String> = batch.tweets.iter().map(|t| t.id().to_owned()).collect();
    assert_eq!(set(&got), set(&ids));
    assert_eq!(provider.generation(), 2);
    assert!(p.stats().unauthorized >= 1);
    let last = s.requests().last().cloned().unwrap();
    assert_eq!(last.status, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn faults_are_survived_and_the_set_is_exact() {
    let s = server().await;
    let mut expected = set(&s.add(corpus(230, TimeDelta::hours(3), "rust")));
    let clock = FakeClock::new();
    let (mut p, events) = poller(
        &s,
        CredentialsProvider::fixed(user_creds(CS)),
        config("rust"),
        &clock,
        Duration::from_secs(1),
    );
    s.push_faults([
        Fault::RateLimited {
            reset_in: Duration::from_secs(120),
        },
        Fault::Status(503),
        Fault::Delay(Duration::from_secs(5)),
        Fault::Truncated,
        // page 1 after all that:
        Fault::PartialErrors,
        // page 2:
        Fault::MalformedTweets,
        // page 3:
        Fault::Status(500),
    ]);
    let (mut got, batches) = poll(&mut p).await;
    assert_eq!(s.pending_faults(), 0);
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0].partial_errors.len(), 1);
    assert_eq!(batches[1].malformed, 2);
    assert_eq!(set(&got), expected);

    let st = p.stats().clone();
    assert_eq!(st.rate_limited, 1);
    assert_eq!(st.transient_errors, 4, "503, timeout, truncated body, 500");
    assert_eq!(st.malformed, 2);
    assert_eq!(st.partial_errors, 1);

    // The 429 waited for its reset (whole seconds, plus a second of slack).
    let waits = clock.sleeps();
    assert!(
        waits[0] >= Duration::from_secs(119) && waits[0] <= Duration::from_secs(122),
        "{waits:?}"
    );
    let ev = events.lock().unwrap().clone();
    assert!(matches!(
        ev[0],
        SearchEvent::RateLimited { until: Some(_), .. }
    ));
    assert!(
        ev.iter().any(
            |e| matches!(e, SearchEvent::Transient { error, .. } if error.contains("timed out"))
        )
    );
    assert!(
        ev.iter().any(
            |e| matches!(e, SearchEvent::Transient { error, .. } if error.contains("malformed"))
        )
    );
    // Every failed page was retried with the same parameters: same token.
    let reqs = s.requests();
    let page3: Vec<_> = reqs
        .iter()
        .filter(|r| r.param("next_token").is_some())
        .map(|r| r.param("next_token").unwrap().to_owned())
        .collect();
    assert_eq!(page3.len(), 3, "page 2, page 3 (500), page 3 again");
    assert_eq!(page3[1], page3[2]);

    // Next poll, with more faults: still exact, nothing twice.
    let newer = s.add(corpus(15, TimeDelta::seconds(30), "rust new"));
    expected.extend(newer.iter().cloned());
    s.push_faults([Fault::Status(502), Fault::Truncated]);
    let (next, _) = poll(&mut p).await;
    assert_eq!(set(&next), set(&newer));
    got.extend(next);
    assert_no_duplicates(&got);
    assert_eq!(set(&got), expected);
}

#[tokio::test]
async fn exhausted_quota_waits_for_the_reset() {
    let s = server().await;
    s.add(corpus(150, TimeDelta::hours(1), "rust"));
    let clock = FakeClock::new();
    let (mut p, events) = user_poller(&s, config("rust"), &clock);
    s.push_faults([Fault::QuotaExhausted {
        reset_in: Duration::from_secs(600),
    }]);
    let b = p.next_batch().await.unwrap();
    assert_eq!(b.tweets.len(), 100, "the answer itself is used");
    assert_eq!(p.rate_limit().remaining, Some(0));
    assert!(clock.sleeps().is_empty());
    let b = p.next_batch().await.unwrap();
    assert_eq!(b.tweets.len(), 50);
    let waits = clock.sleeps();
    assert_eq!(waits.len(), 1);
    assert!(
        waits[0] >= Duration::from_secs(599) && waits[0] <= Duration::from_secs(602),
        "{waits:?}"
    );
    assert!(matches!(
        events.lock().unwrap()[0],
        SearchEvent::QuotaExhausted { .. }
    ));
}

#[tokio::test]
async fn too_old_since_id_falls_back_to_a_start_time() {
    let s = server().await;
    // Older than recent search reaches: never returned by /recent.
    s.add(corpus(3, TimeDelta::days(8), "rust"));
    let recent = s.add(corpus(40, TimeDelta::hours(1), "rust"));
    let clock = FakeClock::new();
    let (p, events) = user_poller(&s, config("rust"), &clock);
    // A cursor persisted ten days ago.
    let stale = twitterstream_tests::xapi::snowflake(Utc::now() - TimeDelta::days(10), 0);
    let mut p = p.with_since_id(Some(stale.to_string()));
    let (got, _) = poll(&mut p).await;
    assert_eq!(set(&got), set(&recent));
    let reqs = s.requests();
    assert_eq!(reqs[0].status, 400);
    assert_eq!(reqs[0].param("since_id"), Some(stale.to_string().as_str()));
    assert_eq!(reqs[1].status, 200);
    assert_eq!(reqs[1].param("since_id"), None);
    let start: DateTime<Utc> = reqs[1].param("start_time").unwrap().parse().unwrap();
    assert!(start > Utc::now() - TimeDelta::days(7));
    assert!(matches!(
        &events.lock().unwrap()[0],
        SearchEvent::CursorTooOld { parameter, .. } if parameter == "since_id"
    ));
    // Back on a cursor afterwards.
    let newer = s.add(corpus(2, TimeDelta::seconds(30), "rust"));
    let (got, _) = poll(&mut p).await;
    assert_eq!(set(&got), set(&newer));
    let last = s.requests().last().cloned().unwrap();
    assert_eq!(last.param("since_id"), Some(recent[0].as_str()));
    assert_eq!(last.param("start_time"), None);

    // The scripted variant of the same 400 (a cursor X calls too old even
    // though it looks recent) is survived the same way.
    s.push_faults([Fault::SinceIdTooOld]);
    let newest = s.add(
        [20, 15, 12]
            .map(|secs| TweetSpec::new(Utc::now() - TimeDelta::seconds(secs), 9, "rust newest")),
    );
    let (got, _) = poll(&mut p).await;
    assert_eq!(set(&got), set(&newest));
    assert_eq!(p.stats().cursor_fallbacks, 2);
}

#[tokio::test]
async fn min_faves_filters_and_counts() {
    let s = server().await;
    let tweets = corpus(40, TimeDelta::hours(1), "rust");
    let wanted: Vec<String> = tweets
        .iter()
        .filter(|t| t.like_count >= 7)
        .map(|t| t.id())
        .collect();
    s.add(tweets);
    let clock = FakeClock::new();
    let cfg = SearchConfig {
        min_faves: Some(7),
        ..config("rust")
    };
    let (mut p, _) = user_poller(&s, cfg, &clock);
    let (got, batches) = poll(&mut p).await;
    assert_eq!(set(&got), set(&wanted));
    assert_eq!(got.len(), 12);
    assert_eq!(batches[0].filtered, 28);
    assert_eq!(p.stats().filtered, 28);
    // The cursor still covers the filtered tweets: they are not asked again.
    assert!(p.since_id().is_some());
}

#[tokio::test]
async fn app_only_auto_uses_full_archive_for_old_start_times() {
    let s = server().await;
    s.set_bearer(Some("app-only-token"));
    let old = s.add(corpus(5, TimeDelta::days(20), "rust"));
    let new = s.add(corpus(5, TimeDelta::hours(1), "rust"));
    let clock = FakeClock::new();
    let cfg = SearchConfig {
        start_time: Some(Utc::now() - TimeDelta::days(30)),
        ..config("rust")
    };
    let creds = Credentials {
        user: None,
        bearer: Some(Secret::new("app-only-token")),
    };
    let (mut p, _) = poller(
        &s,
        CredentialsProvider::fixed(creds),
        cfg.clone(),
        &clock,
        Duration::from_secs(5),
    );
    let (got, batches) = poll(&mut p).await;
    assert_eq!(batches[0].endpoint, Endpoint::All);
    let mut all = old.clone();
    all.extend(new);
    assert_eq!(set(&got), set(&all));
    let r = &s.requests()[0];
    assert_eq!(r.path, "/2/tweets/search/all");
    assert_eq!(r.auth, SeenAuth::Bearer);
    assert!(r.param("start_time").is_some());

    // User context with the same settings stays on /recent, where X refuses
    // the old start_time; the poller clamps it to what X allows.
    let (mut p, events) = user_poller(&s, cfg, &clock);
    let before = s.requests().len();
    let (got, batches) = poll(&mut p).await;
    assert_eq!(batches[0].endpoint, Endpoint::Recent);
    assert_eq!(set(&got), set(&all[5..]));
    assert_eq!(s.requests()[before].status, 400);
    assert!(matches!(
        &events.lock().unwrap()[0],
        SearchEvent::CursorTooOld { parameter, .. } if parameter == "start_time"
    ));
}

#[tokio::test]
async fn explicit_full_archive_with_user_context_is_reported() {
    let s = server().await;
    let clock = FakeClock::new();
    let cfg = SearchConfig {
        endpoint: SearchEndpoint::All,
        ..config("rust")
    };
    let (mut p, events) = user_poller(&s, cfg, &clock);
    let _ = tokio::time::timeout(Duration::from_secs(2), p.next_batch()).await;
    let ev = events.lock().unwrap().clone();
    assert!(
        matches!(&ev[0], SearchEvent::Unauthorized { status: 403, detail, .. } if detail.contains("Unsupported Authentication")),
        "{ev:?}"
    );
}

/// Moves the fake X project's cap reset into the past when the poller settles
/// in for a wait of more than an hour, as the real reset day would come.
struct ResetComesDuringTheWait {
    clock: Arc<FakeClock>,
    server: Arc<XApiServer>,
}

impl Clock for ResetComesDuringTheWait {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        if d >= Duration::from_secs(3600) {
            self.server
                .move_cap_reset(Utc::now() - TimeDelta::seconds(1));
        }
        self.clock.sleep(d)
    }
}

/// X answers 429 `UsageCapExceeded` from the request after the project's
/// monthly post cap is reached until the cap's reset day. The poller tells it
/// from a rate limit by its problem type, asks nothing until the reset
/// (which it reads from `GET /2/usage/tweets` with app-only credentials, or
/// tries again hourly without them), and resumes where it stopped.
#[tokio::test]
async fn a_reached_post_cap_is_waited_out_until_its_reset() {
    for app_only in [true, false] {
        let s = Arc::new(server().await);
        s.set_bearer(Some("app-only-token"));
        s.add(corpus(150, TimeDelta::hours(1), "rust"));
        let reset = (Utc::now() + TimeDelta::days(3))
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        s.set_post_cap(120, reset);
        let clock = FakeClock::new();
        let events: Events = Arc::default();
        let sink = events.clone();
        let mut credentials = user_creds(CS);
        if app_only {
            credentials.bearer = Some(Secret::new("app-only-token"));
        }
        let client = XApiClient::new(&s.base_url(), Duration::from_secs(5)).unwrap();
        let mut p = SearchPoller::new(
            client,
            CredentialsProvider::fixed(credentials),
            config("rust"),
        )
        .with_clock(Arc::new(ResetComesDuringTheWait {
            clock: clock.clone(),
            server: s.clone(),
        }))
        .on_event(move |e| sink.lock().unwrap().push(e.clone()));

        // The page that reaches the cap is answered whole, as X does.
        let (first, _) = poll(&mut p).await;
        assert_eq!(first.len(), 150);
        assert_eq!(
            s.project().usage,
            150,
            "the server counted what it returned"
        );
        assert_eq!(s.project().capped_answers, 0);

        let newer = s.add(corpus(7, TimeDelta::seconds(30), "rust new"));
        let before = clock.now();
        let (second, _) = poll(&mut p).await;
        assert_eq!(set(&second), set(&newer), "resumed where it stopped");
        let figures = s.project();
        assert_eq!(
            figures.capped_answers, 1,
            "one refused search, then none until the reset"
        );
        assert_eq!(
            figures.usage, 7,
            "a new period counts only what came after the reset"
        );
        assert_eq!(p.stats().usage_capped, 1);
        assert_eq!(p.stats().rate_limited, 0, "not taken for a rate limit");

        let waits: Vec<Duration> = clock
            .sleeps()
            .into_iter()
            .filter(|d| *d >= Duration::from_secs(60))
            .collect();
        let capped: Vec<SearchEvent> = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, SearchEvent::UsageCapped { .. }))
            .cloned()
            .collect();
        assert_eq!(capped.len(), 1, "{capped:?}");
        let SearchEvent::UsageCapped { until, usage, .. } = &capped[0] else {
            unreachable!()
        };
        if app_only {
            let u = usage.expect("the usage read with the bearer token");
            assert_eq!((u.usage, u.cap), (150, 120));
            assert_eq!(
                *until,
                reset + TimeDelta::seconds(1),
                "the reset day, 00:00 UTC"
            );
            let expected = (reset + TimeDelta::seconds(1) - before).to_std().unwrap();
            assert_eq!(waits.len(), 1, "{waits:?}");
            // (Less the poll interval the second poll began with.)
            assert!(
                waits[0] <= expected && waits[0] + Duration::from_secs(40) >= expected,
                "waited {:?}, the reset was {expected:?} away",
                waits[0]
            );
            let usage_reads = s
                .requests()
                .iter()
                .filter(|r| r.path == "/2/usage/tweets" && r.status == 200)
                .count();
            assert_eq!(usage_reads, 1);
        } else {
            assert_eq!(
                *usage, None,
                "no app-only credentials to read the usage with"
            );
            assert_eq!(
                waits,
                vec![Duration::from_secs(3601)],
                "tried again in an hour"
            );
        }
    }
}

/// A search without a start time begins `lookback` back, not at the 7 days
/// recent search holds: X counts every post returned against the project's
/// cap. With 0 it begins at its first poll.
#[tokio::test]
async fn a_first_poll_without_a_start_time_reads_only_its_lookback() {
    for lookback_minutes in [10, 0] {
        let s = server().await;
        let old = s.add(corpus(40, TimeDelta::days(3), "rust"));
        let hour = s.add(corpus(30, TimeDelta::minutes(30), "rust"));
        let recent = s.add(corpus(5, TimeDelta::seconds(90), "rust recent"));
        // The poller's clock a minute behind the server's, so that a start
        // "from now" is old enough for X (10 s) once virtual time moves on.
        let t0 = Utc::now() - TimeDelta::minutes(1);
        let clock = FakeClock::at(t0);
        let cfg = SearchConfig {
            lookback: Some(TimeDelta::minutes(lookback_minutes)),
            ..config("rust")
        };
        let (mut p, _) = user_poller(&s, cfg, &clock);
        let (first, _) = poll(&mut p).await;
        if lookback_minutes == 10 {
            assert_eq!(set(&first), set(&recent), "only the last 10 minutes");
            let start = s
                .requests()
                .iter()
                .find_map(|r| r.param("start_time").map(str::to_owned))
                .expect("a start_time");
            let start: DateTime<Utc> = start.parse().unwrap();
            let off = (start - (t0 - TimeDelta::minutes(10)))
                .num_milliseconds()
                .abs();
            assert!(
                off < 1000,
                "began {start}, {off} ms from 10 minutes before the first poll"
            );
        } else {
            assert!(first.is_empty(), "nothing before the first poll: {first:?}");
        }
        assert_eq!(
            s.project().usage,
            first.len() as u64,
            "paid for what was read"
        );

        // What comes later is read, and nothing older ever.
        let later = s.add((0..3).map(|i| {
            TweetSpec::new(
                Utc::now() - TimeDelta::seconds(20 - i),
                7000 + i as u16,
                "rust later",
            )
        }));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend(poll(&mut p).await.0);
        }
        let seen: HashSet<String> = first.iter().chain(&got).cloned().collect();
        for id in &later {
            assert!(seen.contains(id), "a later post was missed");
        }
        for id in old.iter().chain(&hour) {
            assert!(
                !seen.contains(id),
                "a post older than the lookback was read"
            );
        }
        if lookback_minutes == 0 {
            for id in &recent {
                assert!(
                    !seen.contains(id),
                    "a post from before the first poll was read"
                );
            }
        }
        assert_no_duplicates(&first.iter().chain(&got).cloned().collect::<Vec<_>>());
        assert_eq!(s.project().usage, seen.len() as u64);
    }
}

/// The longest lookback, recent search's whole 7 days, begins a minute inside
/// them: X refuses a start time even a moment older.
#[tokio::test]
async fn a_seven_day_lookback_is_not_refused() {
    let s = server().await;
    let old = s.add(corpus(20, TimeDelta::days(3), "rust"));
    let clock = FakeClock::new();
    let cfg = SearchConfig {
        lookback: Some(TimeDelta::days(7)),
        ..config("rust")
    };
    let (mut p, _) = user_poller(&s, cfg, &clock);
    let (first, _) = poll(&mut p).await;
    assert_eq!(set(&first), set(&old));
    let statuses: Vec<u16> = s.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200], "one request, accepted");
}
