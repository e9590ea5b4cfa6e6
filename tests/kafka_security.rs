//! The workers on secured Kafka listeners of the real broker (tests/env/up):
//! TLS, mutual TLS, SASL PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER (OIDC
//! client credentials) over TLS or plaintext.
//!
//! Per mechanism, end to end: the producer publishes synthetic tweets, the
//! consumer creates its partials topic and publishes its windows, all over
//! the secured listener, and the windows are exactly the truth computed
//! from the raw topic (read back over the plaintext listener with
//! read_committed). Per bad credential (a wrong password, an unknown user,
//! an untrusted or expired client certificate, brokers whose certificate
//! the client's CA did not sign, an OAuth client the token
//! endpoint refuses, a token the brokers do not trust): the worker exits
//! non-zero with the reason, and no secret appears in what it wrote.
//!
//! OAUTHBEARER: librdkafka's own OIDC client fetches tokens from the token
//! endpoint of tests/support/oauth.rs (there is no identity provider here)
//! and the brokers validate them against the environment's JWKS.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use twitterstream_tests::consumer::{ReplicaArgs, read_output, wait_for_windows};
use twitterstream_tests::kafka::{
    acls, create_topic, deny_by_default, read_committed_records, set_scram_password,
};
use twitterstream_tests::oauth::{TokenEndpoint, oauth_dir};
use twitterstream_tests::process::{ChildProcess, binary, free_port};
use twitterstream_tests::truth::{self, Rules};
use twitterstream_tests::{env_var, eventually, unique_name};

fn security_dir() -> PathBuf {
    PathBuf::from(env_var("KAFKA_SECURITY_DIR"))
}

fn tls(file: &str) -> String {
    security_dir().join("tls").join(file).display().to_string()
}

fn user_file(user: &str, what: &str) -> String {
    security_dir()
        .join("users")
        .join(user)
        .join(what)
        .display()
        .to_string()
}

/// A way of connecting: the listener's brokers and the workers' flags.
#[derive(Clone)]
struct Mechanism {
    name: &'static str,
    brokers: String,
    flags: Vec<String>,
}

fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("--{k}={v}")).collect()
}

fn tls_only() -> Mechanism {
    Mechanism {
        name: "tls",
        brokers: env_var("KAFKA_TLS_BROKERS"),
        flags: flags(&[
            ("kafka-security-protocol", "ssl".into()),
            ("kafka-ca-file", tls("ca.crt")),
        ]),
    }
}

fn mtls(cert: &str, key: &str) -> Mechanism {
    Mechanism {
        name: "mtls",
        brokers: env_var("KAFKA_MTLS_BROKERS"),
        flags: flags(&[
            ("kafka-security-protocol", "ssl".into()),
            ("kafka-ca-file", tls("ca.crt")),
            ("kafka-cert-file", tls(cert)),
            ("kafka-key-file", tls(key)),
        ]),
    }
}

fn sasl(
    name: &'static str,
    protocol: &str,
    mechanism: &str,
    user: &str,
    password_file: String,
) -> Mechanism {
    let brokers = match protocol {
        "sasl-ssl" => env_var("KAFKA_SASL_SSL_BROKERS"),
        _ => env_var("KAFKA_SASL_PLAINTEXT_BROKERS"),
    };
    let mut pairs = vec![
        ("kafka-security-protocol", protocol.to_owned()),
        ("kafka-sasl-mechanism", mechanism.to_owned()),
        ("kafka-sasl-username-file", user_file(user, "username")),
        ("kafka-sasl-password-file", password_file),
    ];
    if protocol == "sasl-ssl" {
        pairs.push(("kafka-ca-file", tls("ca.crt")));
    }
    Mechanism {
        name,
        brokers,
        flags: flags(&pairs),
    }
}

fn scram(name: &'static str, mechanism: &str) -> Mechanism {
    sasl(
        name,
        "sasl-ssl",
        mechanism,
        "twsscram",
        user_file("twsscram", "password"),
    )
}

/// OAUTHBEARER over TLS with the environment's OAuth client, whose tokens
/// come from `endpoint`.
fn oauth(name: &'static str, endpoint: &TokenEndpoint, secret_file: String) -> Mechanism {
    let client_id = oauth_dir().join("client_id").display().to_string();
    Mechanism {
        name,
        brokers: env_var("KAFKA_SASL_SSL_BROKERS"),
        flags: flags(&[
            ("kafka-security-protocol", "sasl-ssl".into()),
            ("kafka-ca-file", tls("ca.crt")),
            ("kafka-sasl-mechanism", "OAUTHBEARER".into()),
            ("kafka-sasl-username-file", client_id),
            ("kafka-sasl-password-file", secret_file),
            ("kafka-oauth-token-endpoint", endpoint.url()),
            ("kafka-oauth-scope", "kafka:pipeline".into()),
        ]),
    }
}

/// A producer of `count` synthetic tweets at `rate` per second over `m`.
fn producer(
    m: &Mechanism,
    topic: &str,
    stream: &str,
    (rate, count): (u32, u32),
    tag: &str,
) -> ChildProcess {
    let mut cmd = Command::new(binary("twitterstream-workers", "twitterstream-producer"));
    cmd.args([
        "--source=synthetic",
        &format!("--synthetic-rate={rate}"),
        &format!("--synthetic-count={count}"),
        "--exit-when-done",
        &format!("--brokers={}", m.brokers),
        &format!("--topic={topic}"),
        &format!("--stream-name={stream}"),
        &format!("--http-addr=127.0.0.1:{}", free_port()),
    ])
    .args(&m.flags)
    .env_remove("RUST_LOG");
    ChildProcess::spawn(cmd, &format!("security-{tag}"))
}

/// A consumer replica's command line over `m`'s listener: 10 s tumbling
/// windows from the earliest offsets.
fn replica_args(
    m: &Mechanism,
    topic: &str,
    stream: &str,
    group: &str,
    output: &str,
) -> Vec<String> {
    let mut args = ReplicaArgs {
        topic,
        stream,
        group,
        output,
        window: (10, 10),
    }
    .with(&["--start-from=earliest", "--idle-partition-seconds=3"]);
    // Over the secured listener instead of the plaintext one.
    let at = args
        .iter()
        .position(|a| a == "--brokers")
        .expect("--brokers");
    args[at + 1] = m.brokers.clone();
    args.extend(m.flags.iter().cloned());
    args
}

/// Waits for the process to exit; its status code.
async fn exit_code(p: &mut ChildProcess, within: Duration) -> i32 {
    let status = eventually("the worker to exit", within, || {
        std::future::ready(p.child.try_wait().ok().flatten())
    })
    .await;
    status.code().unwrap_or(-1)
}

/// Publishes and windows a stream over `m`; the windows match the truth.
async fn end_to_end(m: Mechanism) {
    let topic = unique_name(&format!("sec-{}", m.name));
    let output = format!("{topic}-windows");
    create_topic(&topic, 2, 1).await;
    // One partition: the readers of the output topic read partition 0.
    create_topic(&output, 1, 1).await;
    let stream: &'static str = Box::leak(format!("sec-{}", m.name).into_boxed_str());
    let mut p = producer(&m, &topic, stream, (400, 2000), m.name);
    assert_eq!(
        exit_code(&mut p, Duration::from_secs(120)).await,
        0,
        "producer over {}: {}",
        m.name,
        p.log_text()
    );
    let group = unique_name("sec-group");
    let args = replica_args(&m, &topic, stream, &group, &output);
    let records = read_committed_records(&topic).await;
    assert_eq!(records.len(), 2000, "{}: tweets published", m.name);
    let want = truth::expected(&records, &Rules::tumbling(stream, 10));
    let _replica = twitterstream_tests::consumer::Replica::start(&format!("sec-{}", m.name), &args);
    wait_for_windows(&output, want.len(), Duration::from_secs(120)).await;
    let got = truth::published(stream, &read_output(&output));
    truth::assert_exact(&got, &want);
    // The consumer created its partials topic over the secured listener.
    let partials = format!("{group}-partials");
    assert!(
        twitterstream_tests::kafka::describe_topic(&partials)
            .await
            .is_some(),
        "{}: {partials} not created",
        m.name
    );
    println!(
        "{}: topic {partials} created, 2000 tweets published, {} windows exact over {}",
        m.name,
        got.len(),
        m.brokers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_publishes_and_windows_exactly() {
    end_to_end(tls_only()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_publishes_and_windows_exactly() {
    end_to_end(mtls("client.crt", "client.key")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_publishes_and_windows_exactly() {
    let m = sasl(
        "plain",
        "sasl-plaintext",
        "PLAIN",
        "twsplain",
        user_file("twsplain", "password"),
    );
    end_to_end(m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_publishes_and_windows_exactly() {
    end_to_end(scram("scram256", "SCRAM-SHA-256")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_512_publishes_and_windows_exactly() {
    end_to_end(scram("scram512", "SCRAM-SHA-512")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_publishes_and_windows_exactly() {
    let endpoint = TokenEndpoint::start(300).await;
    let secret = oauth_dir().join("client_secret").display().to_string();
    end_to_end(oauth("oauth", &endpoint, secret)).await;
    // Every client got its token from the endpoint, with the scope asked for.
    let grants = endpoint.grants();
    assert!(grants.issued >= 2, "tokens issued: {grants:?}");
    assert_eq!(grants.refused, 0, "{grants:?}");
    assert!(
        grants.scopes.iter().all(|s| s == "kafka:pipeline"),
        "{grants:?}"
    );
    println!("oauth: {grants:?}");
}

/// A worker that was never let in gives up after this long whatever its
/// grace (the workers' `FIRST_CONTACT_GRACE`, 15 s), and a few seconds for
/// its start, its last request and the exit.
const FIRST_CONTACT_EXIT: Duration = Duration::from_secs(30);

/// One worker's first contact with a bad setting: how long until it exited,
/// and its termination message (the log is checked for the secret).
async fn first_contact(
    mut cmd: Command,
    tag: &str,
    termination: &std::path::Path,
    secret: Option<&str>,
) -> (Duration, String) {
    let started = std::time::Instant::now();
    cmd.env("TWS_TERMINATION_LOG", termination)
        .env("RUST_LOG", "debug,librdkafka=debug");
    let mut p = ChildProcess::spawn(cmd, tag);
    let code = exit_code(&mut p, Duration::from_secs(90)).await;
    let took = started.elapsed();
    let log = p.log_text();
    let message = std::fs::read_to_string(termination).unwrap_or_default();
    assert_ne!(code, 0, "{tag}: {log}");
    if let Some(secret) = secret {
        assert!(!log.contains(secret), "{tag}: the secret is in the log");
        assert!(
            !message.contains(secret),
            "{tag}: the secret is in the message"
        );
    }
    // The refusal was an error line long before the exit.
    assert!(
        log.contains("Kafka refused this worker"),
        "{tag}: no refusal line in the log"
    );
    (took, message)
}

/// A bad credential, at the default grace: the producer and the consumer
/// each exit 1 within [`FIRST_CONTACT_EXIT`], naming what was refused in
/// their log and termination message, and the secret they were given
/// appears nowhere. A table row per worker is printed.
async fn refused(m: Mechanism, expect: &[&str], secret: Option<&str>) {
    let topic = unique_name(&format!("sec-bad-{}", m.name));
    create_topic(&topic, 1, 1).await;
    let producer = {
        let mut cmd = Command::new(binary("twitterstream-workers", "twitterstream-producer"));
        cmd.args([
            "--source=synthetic",
            "--synthetic-count=10",
            &format!("--brokers={}", m.brokers),
            &format!("--topic={topic}"),
            "--stream-name=bad",
            &format!("--http-addr=127.0.0.1:{}", free_port()),
        ])
        .args(&m.flags);
        cmd
    };
    let consumer = {
        let group = unique_name("sec-bad-group");
        let mut cmd = Command::new(binary("twitterstream-workers", "twitterstream-consumer"));
        cmd.args(replica_args(
            &m,
            &topic,
            "bad",
            &group,
            &format!("{topic}-out"),
        ))
        .arg(format!("--http-addr=127.0.0.1:{}", free_port()));
        cmd
    };
    let dir = std::env::temp_dir();
    let p_term = dir.join(format!("{topic}.producer.termination"));
    let c_term = dir.join(format!("{topic}.consumer.termination"));
    let (p_tag, c_tag) = (
        format!("security-bad-{}-producer", m.name),
        format!("security-bad-{}-consumer", m.name),
    );
    let ((p_took, p_message), (c_took, c_message)) = tokio::join!(
        first_contact(producer, &p_tag, &p_term, secret),
        first_contact(consumer, &c_tag, &c_term, secret),
    );
    for (worker, took, message) in [
        ("producer", p_took, &p_message),
        ("consumer", c_took, &c_message),
    ] {
        assert!(
            message.contains(&format!("this {worker} could not log in to Kafka")),
            "{} {worker}: termination message {message:?}",
            m.name
        );
        for e in expect {
            assert!(
                message.to_lowercase().contains(&e.to_lowercase()),
                "{} {worker}: termination message {message:?} lacks {e:?}",
                m.name
            );
        }
        assert!(
            took <= FIRST_CONTACT_EXIT,
            "{} {worker}: exited after {took:?}",
            m.name
        );
        println!(
            "| {} | {worker} | {:.1} s | {message} |",
            m.name,
            took.as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_end_with_the_reason_and_no_secret() {
    let dir = std::env::temp_dir().join(unique_name("sec-wrong"));
    std::fs::create_dir_all(&dir).expect("dir");
    let wrong = dir.join("password");
    let secret = "not-the-password-3141";
    std::fs::write(&wrong, secret).expect("write");
    let wrong = wrong.display().to_string();
    let endpoint = TokenEndpoint::start(300).await;
    // Tokens of an issuer the brokers do not trust: signed by another key.
    let foreign_key = dir.join("foreign.key");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&foreign_key)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let foreign = TokenEndpoint::start_with_key(&foreign_key, 300).await;
    let client_secret = oauth_dir().join("client_secret").display().to_string();
    let cases: Vec<(Mechanism, Vec<&str>, Option<&str>)> = vec![
        (
            sasl(
                "scram-wrong-password",
                "sasl-ssl",
                "SCRAM-SHA-512",
                "twsscram",
                wrong.clone(),
            ),
            vec!["authentication failed"],
            Some(secret),
        ),
        (
            sasl(
                "plain-wrong-password",
                "sasl-plaintext",
                "PLAIN",
                "twsplain",
                wrong.clone(),
            ),
            vec!["authentication failed"],
            Some(secret),
        ),
        (
            {
                // A user the brokers do not know.
                let mut m = scram("scram-unknown-user", "SCRAM-SHA-256");
                let unknown = dir.join("username");
                std::fs::write(&unknown, "nobody").expect("write");
                for f in &mut m.flags {
                    if f.starts_with("--kafka-sasl-username-file=") {
                        *f = format!("--kafka-sasl-username-file={}", unknown.display());
                    }
                }
                m
            },
            vec!["authentication failed"],
            None,
        ),
        (
            Mechanism {
                name: "mtls-untrusted",
                ..mtls("untrusted.crt", "untrusted.key")
            },
            vec!["TLS trust failed", "this client's certificate"],
            None,
        ),
        (
            Mechanism {
                name: "mtls-expired",
                ..mtls("expired.crt", "expired.key")
            },
            vec!["TLS trust failed", "this client's certificate"],
            None,
        ),
        (
            // The client does not trust the brokers: their CA is not the one
            // it was given.
            Mechanism {
                name: "tls-untrusted-brokers",
                flags: flags(&[
                    ("kafka-security-protocol", "ssl".into()),
                    ("kafka-ca-file", tls("untrusted.crt")),
                ]),
                ..tls_only()
            },
            vec![
                "TLS trust failed",
                "does not trust the brokers' certificate",
            ],
            None,
        ),
        (
            // The token endpoint refuses the client: no token at all.
            oauth("oauth-wrong-secret", &endpoint, wrong.clone()),
            vec!["token"],
            Some(secret),
        ),
        (
            // A token the brokers cannot verify.
            oauth("oauth-untrusted-token", &foreign, client_secret),
            vec!["authentication failed"],
            None,
        ),
    ];
    // All at once: each waits out the first-contact grace.
    println!("| case | worker | exit after | termination message |");
    futures::future::join_all(
        cases
            .iter()
            .map(|(m, expect, secret)| refused(m.clone(), expect, *secret)),
    )
    .await;
    assert!(endpoint.grants().refused > 0, "{:?}", endpoint.grants());
    assert!(foreign.grants().issued > 0, "{:?}", foreign.grants());
}

/// Replaces `path`'s contents in one step, as the kubelet's atomic writer
/// does: a worker never reads a half-written password (a plain write
/// truncates first; a CI run's consumer stage logged in again twice, 18 s
/// apart, the first time most likely with the emptied file).
fn write_atomically(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// When the rotated password file reaches the workers.
#[derive(Debug, Clone, Copy)]
enum FileArrives {
    /// With the brokers' change (the kubelet was quick).
    AtOnce,
    /// Once a worker logged that the brokers refuse its old password (the
    /// kubelet may take a minute).
    AfterARefusal,
}

/// What a worker logs when the brokers refuse its login.
const REFUSED: &str = "SASL authentication error";

/// A password rotated mid-run, on the brokers and then in the mounted file
/// (as a `KafkaUser` rotation and the kubelet do). The brokers refuse the
/// old password at the next re-authentication (every 15 s here). The
/// workers log in again with the new file: after a commit when they notice
/// it first, or at once when the brokers already refuse them. The producer
/// finishes, every tweet is published once and every window is exact;
/// neither worker restarted.
///
/// Each step waits for the one before rather than for a fixed time: with a
/// 6000-tweet, 40 s producer and fixed sleeps, a slow `kafka-configs` run
/// (a JVM start under a loaded CI machine) moved the rotation so late that
/// the producer finished before the brokers re-authenticated it, 1 CI run in
/// about 10. The producer now runs 70 s, and the test fails saying so if it
/// ends before the rotation reached it.
async fn rotation(name: &str, file: FileArrives) {
    let user = unique_name("tws-rot");
    let dir = std::env::temp_dir().join(&user);
    std::fs::create_dir_all(&dir).expect("dir");
    let (username, password) = (dir.join("username"), dir.join("password"));
    std::fs::write(&username, &user).expect("write");
    let old = unique_name("old-pw");
    set_scram_password(&user, &old);
    std::fs::write(&password, &old).expect("write");
    let m = sasl(
        "rotation",
        "sasl-ssl",
        "SCRAM-SHA-512",
        "unused",
        password.display().to_string(),
    );
    let m = Mechanism {
        flags: m
            .flags
            .into_iter()
            .map(|f| {
                if f.starts_with("--kafka-sasl-username-file=") {
                    format!("--kafka-sasl-username-file={}", username.display())
                } else {
                    f
                }
            })
            .collect(),
        ..m
    };
    let topic = unique_name("sec-rotation");
    let output = format!("{topic}-windows");
    create_topic(&topic, 2, 1).await;
    create_topic(&output, 1, 1).await;
    // Each test its own stream: the transactional id derives from it.
    let stream: &'static str = Box::leak(name.to_owned().into_boxed_str());
    // 60 s of tweets: the rotation below takes up to ~35 s after the 8 s
    // (a JVM start, up to 15 s until the next re-authentication, a 5 s file
    // check).
    let (rate, count) = (250, 15_000);
    // Built (or found) before anything starts: under CI's parallel lanes
    // the first `cargo build` of a binary waited 30 s for cargo's lock,
    // and the producer ran all that time alone.
    twitterstream_tests::consumer::consumer_binary();
    let started = std::time::Instant::now();
    let mut p = producer(&m, &topic, stream, (rate, count), name);
    let group = unique_name("sec-rot-group");
    let args = replica_args(&m, &topic, stream, &group, &output);
    let replica = twitterstream_tests::consumer::Replica::start(&unique_name(name), &args);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let new = unique_name("new-pw");
    set_scram_password(&user, &new);
    let changed = started.elapsed();
    if let FileArrives::AfterARefusal = file {
        eventually(
            "a worker to be refused its old password",
            Duration::from_secs(45),
            || {
                std::future::ready(
                    (p.log_text().contains(REFUSED) || replica.log_text().contains(REFUSED))
                        .then_some(()),
                )
            },
        )
        .await;
    }
    assert!(
        p.child.try_wait().ok().flatten().is_none(),
        "the producer ended before the new password file was written \
         ({:?} after its start, the brokers changed at {changed:?}): it must run longer",
        started.elapsed()
    );
    write_atomically(&password, &new);
    println!(
        "{name}: password changed on the brokers at {changed:?}, the file at {:?}",
        started.elapsed()
    );
    assert_eq!(
        exit_code(&mut p, Duration::from_secs(150)).await,
        0,
        "producer: {}",
        p.log_text()
    );
    let records = read_committed_records(&topic).await;
    assert_eq!(records.len(), count as usize, "tweets published once each");
    let want = truth::expected(&records, &Rules::tumbling(stream, 10));
    let waited = tokio::time::timeout(
        Duration::from_secs(120),
        wait_for_windows(&output, want.len(), Duration::from_secs(3600)),
    )
    .await;
    if waited.is_err() {
        // Where a stage that never logged in again is stuck (1 run in 3
        // to 6 under full-suite load; never reproduced alone).
        replica.show_threads();
        panic!("timed out after 120 s waiting for {} windows", want.len());
    }
    let got = truth::published(stream, &read_output(&output));
    truth::assert_exact(&got, &want);
    let relogin = "the Kafka credentials changed; logging in again with them";
    let producer_log = p.log_text();
    assert!(producer_log.contains(relogin), "producer: {producer_log}");
    let consumer_log = replica.log_text();
    assert!(consumer_log.contains(relogin), "consumer: {consumer_log}");
    for (who, log) in [("producer", &producer_log), ("consumer", &consumer_log)] {
        assert!(
            !log.contains(&old) && !log.contains(&new),
            "{who} logged a password"
        );
    }
    println!(
        "{name}: {count} tweets once each, {} windows exact; both workers logged in again without a restart",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_credentials_are_taken_up_without_a_restart() {
    rotation("rotation", FileArrives::AtOnce).await;
}

/// The file arrives after the brokers refused a worker its old password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rotated_on_the_brokers_first_are_taken_up_when_the_file_arrives() {
    rotation("rotation-late-file", FileArrives::AfterARefusal).await;
}

/// A consumer waiting for a topic that does not exist yet stops at once on
/// SIGTERM (it slept out pauses of up to 30 s first, and a CEO's check saw
/// SIGTERM ignored for over 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_waiting_for_its_topics_stops_at_once_on_sigterm() {
    let topic = unique_name("sec-not-yet");
    let args = twitterstream_tests::consumer::ReplicaArgs {
        topic: &topic,
        stream: "later",
        group: &unique_name("sec-not-yet-group"),
        output: &format!("{topic}-out"),
        window: (10, 10),
    }
    .with(&[]);
    // A log of its own: a replica's log is appended to across runs.
    let mut r = twitterstream_tests::consumer::Replica::start(&unique_name("sec-not-yet"), &args);
    // After five lookups (pauses of 0.5, 1, 2 and 4 s) the next pause is
    // 8 s: the signal arrives during it.
    eventually(
        "five lookups of the missing topic",
        Duration::from_secs(60),
        || {
            let log = r.log_text();
            std::future::ready((log.matches("waiting for the topics").count() >= 5).then_some(()))
        },
    )
    .await;
    let started = std::time::Instant::now();
    r.terminate().await;
    let took = started.elapsed();
    println!("SIGTERM while waiting for the topics: exited 0 after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// SCRAM-SHA-512 over TLS as `user`, the password in `password_file`.
fn acl_user(user: &str, password_file: &std::path::Path) -> Mechanism {
    Mechanism {
        name: "acl",
        brokers: env_var("KAFKA_SASL_SSL_BROKERS"),
        flags: flags(&[
            ("kafka-security-protocol", "sasl-ssl".into()),
            ("kafka-ca-file", tls("ca.crt")),
            ("kafka-sasl-mechanism", "SCRAM-SHA-512".into()),
            ("kafka-sasl-username", user.to_owned()),
            (
                "kafka-sasl-password-file",
                password_file.display().to_string(),
            ),
        ]),
    }
}

/// One ACL grant of the consumer's list in docs/kafka.md, and the words a
/// consumer without it must say.
struct Grant {
    name: &'static str,
    args: Vec<String>,
    missing: String,
}

impl Grant {
    /// `kafka-acls --add --allow-principal <principal> <args>`.
    fn new(principal: &str, name: &'static str, args: &[&str], missing: String) -> Self {
        Grant {
            name,
            args: ["--add", "--allow-principal", principal]
                .iter()
                .chain(args)
                .map(|s| s.to_string())
                .collect(),
            missing,
        }
    }
}

/// What a consumer of `group` reading `input` and writing `output` needs,
/// as docs/kafka.md lists it (READ and WRITE imply DESCRIBE).
fn consumer_grants(principal: &str, input: &str, group: &str, output: &str) -> Vec<Grant> {
    let grant = |name, args: &[&str], missing| Grant::new(principal, name, args, missing);
    let partials = format!("{group}-partials");
    let merge = format!("{group}-merge");
    let ids = format!("{group}-");
    vec![
        grant(
            "READ on the input topic",
            &["--operation", "Read", "--topic", input],
            format!("may not DESCRIBE topic '{input}'"),
        ),
        grant(
            "READ on the group",
            &["--operation", "Read", "--group", group],
            format!("may not READ group '{group}'"),
        ),
        grant(
            "READ on the merge group",
            &["--operation", "Read", "--group", &merge],
            format!("may not READ group '{merge}'"),
        ),
        grant(
            "CREATE, WRITE and READ on the partials topic",
            &[
                "--operation",
                "Create",
                "--operation",
                "Write",
                "--operation",
                "Read",
                "--topic",
                &partials,
            ],
            format!("may not DESCRIBE topic '{partials}'"),
        ),
        grant(
            "WRITE on the transactional ids",
            &[
                "--operation",
                "Write",
                "--resource-pattern-type",
                "prefixed",
                "--transactional-id",
                &ids,
            ],
            format!("may not WRITE transactional id '{ids}"),
        ),
        grant(
            "WRITE on the output topic",
            &["--operation", "Write", "--topic", output],
            format!("may not WRITE topic '{output}'"),
        ),
    ]
}

/// Against deny-by-default ACLs (every resource of the test's prefix is
/// named by an ACL of another principal), a consumer granted exactly the
/// list of docs/kafka.md windows a stream exactly; with any one grant
/// removed it exits with a message that names the missing grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_acls_the_docs_list_suffice_and_a_missing_one_is_named() {
    let prefix = unique_name("acl");
    let password = format!("acl-{}", unique_name("pw"));
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("password"), &password).expect("password file");
    // A principal per consumer: ACLs are granted to principals, so a grant
    // one case lacks must not come from another's.
    let principal = |case: &str| {
        let user = format!("{prefix}-{case}");
        set_scram_password(&user, &password);
        (
            acl_user(&user, &dir.join("password")),
            format!("User:{user}"),
        )
    };
    deny_by_default(&prefix);
    let input = format!("{prefix}-in");
    let output = format!("{prefix}-out");
    create_topic(&input, 2, 1).await;
    create_topic(&output, 1, 1).await;
    let plaintext = Mechanism {
        name: "plaintext",
        brokers: env_var("KAFKA_BROKERS"),
        flags: Vec::new(),
    };
    let stream = "acl";
    let mut p = producer(&plaintext, &input, stream, (400, 2000), "acl-producer");
    assert_eq!(
        exit_code(&mut p, Duration::from_secs(120)).await,
        0,
        "{}",
        p.log_text()
    );
    // Every grant: the windows are exact.
    let group = format!("{prefix}-all");
    let (m, all) = principal("all");
    for g in consumer_grants(&all, &input, &group, &output) {
        acls(&g.args);
    }
    let records = read_committed_records(&input).await;
    let want = truth::expected(&records, &Rules::tumbling(stream, 10));
    {
        let args = replica_args(&m, &input, stream, &group, &output);
        let _replica =
            twitterstream_tests::consumer::Replica::start(&format!("{prefix}-all"), &args);
        wait_for_windows(&output, want.len(), Duration::from_secs(120)).await;
    }
    let got = truth::published(stream, &read_output(&output));
    truth::assert_exact(&got, &want);
    println!("every grant: {} windows exact", got.len());

    // One grant missing at a time, all at once: each consumer names it.
    let n = consumer_grants(&all, &input, "g", &output).len();
    let cases = (0..n).map(|missing| {
        let group = format!("{prefix}-no{missing}");
        let (m, principal) = principal(&format!("no{missing}"));
        let grants = consumer_grants(&principal, &input, &group, &output);
        for (i, g) in grants.iter().enumerate() {
            if i != missing {
                acls(&g.args);
            }
        }
        let g = &grants[missing];
        let (name, want) = (g.name, g.missing.clone());
        let termination = dir.join(format!("no{missing}.termination"));
        let log_name = format!("{prefix}-no{missing}");
        let mut cmd = Command::new(binary("twitterstream-workers", "twitterstream-consumer"));
        cmd.args(replica_args(&m, &input, stream, &group, &output))
            .arg(format!("--http-addr=127.0.0.1:{}", free_port()))
            .arg("--kafka-auth-grace-seconds=10")
            .env("TWS_INSTANCE", format!("no{missing}"))
            .env("TWS_TERMINATION_LOG", &termination);
        denied_run(cmd, log_name, termination, name, want)
    });
    assert_each_names_its_grant("consumer", cases, &password).await;
}

/// What a producer of `stream` writing `topic` needs, as docs/kafka.md
/// lists it, and the words a producer without each grant must say.
fn producer_grants(principal: &str, topic: &str, stream: &str) -> Vec<Grant> {
    let id = format!("twitterstream-producer-{stream}");
    let grant = |name, args: &[&str], missing| Grant::new(principal, name, args, missing);
    vec![
        grant(
            "WRITE and READ on the topic",
            &[
                "--operation",
                "Write",
                "--operation",
                "Read",
                "--topic",
                topic,
            ],
            format!("may not DESCRIBE topic '{topic}'"),
        ),
        grant(
            "WRITE on the transactional id",
            &["--operation", "Write", "--transactional-id", &id],
            format!("may not WRITE transactional id '{id}'"),
        ),
        grant(
            "READ on the checkpoint group",
            &["--operation", "Read", "--group", &id],
            format!("may not READ group '{id}'"),
        ),
    ]
}

/// The producer against deny-by-default ACLs: granted exactly the list of
/// docs/kafka.md it publishes every tweet; with any one grant removed it
/// exits naming the missing grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_acls_the_docs_list_suffice_and_a_missing_one_is_named() {
    let prefix = unique_name("pacl");
    deny_by_default(&prefix);
    deny_by_default(&format!("twitterstream-producer-{prefix}"));
    let password = format!("acl-{}", unique_name("pw"));
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("password"), &password).expect("password file");
    let case = |name: &str, missing: Option<usize>| {
        let user = format!("{prefix}-{name}");
        set_scram_password(&user, &password);
        let topic = format!("{prefix}-{name}");
        let stream = format!("{prefix}-{name}");
        for (i, g) in producer_grants(&format!("User:{user}"), &topic, &stream)
            .iter()
            .enumerate()
        {
            if Some(i) != missing {
                acls(&g.args);
            }
        }
        (acl_user(&user, &dir.join("password")), topic, stream)
    };
    let (m, topic, stream) = case("all", None);
    create_topic(&topic, 1, 1).await;
    let mut p = producer(&m, &topic, &stream, (500, 1000), &format!("{prefix}-all"));
    assert_eq!(
        exit_code(&mut p, Duration::from_secs(120)).await,
        0,
        "{}",
        p.log_text()
    );
    assert_eq!(read_committed_records(&topic).await.len(), 1000);
    println!("every grant: 1000 tweets published");

    let n = producer_grants("User:x", "t", "s").len();
    let runs = (0..n).map(|missing| {
        let (m, topic, stream) = case(&format!("no{missing}"), Some(missing));
        let want = producer_grants("User:x", &topic, &stream)[missing]
            .missing
            .clone();
        let name = producer_grants("User:x", "t", "s")[missing].name;
        let termination = dir.join(format!("no{missing}.termination"));
        let log_name = format!("{prefix}-no{missing}");
        async move {
            create_topic(&topic, 1, 1).await;
            let mut cmd = Command::new(binary("twitterstream-workers", "twitterstream-producer"));
            cmd.args([
                "--source=synthetic",
                "--synthetic-count=100",
                &format!("--brokers={}", m.brokers),
                &format!("--topic={topic}"),
                &format!("--stream-name={stream}"),
                &format!("--http-addr=127.0.0.1:{}", free_port()),
                "--kafka-auth-grace-seconds=10",
            ])
            .args(&m.flags)
            .env("TWS_TERMINATION_LOG", &termination);
            denied_run(cmd, log_name, termination, name, want).await
        }
    });
    assert_each_names_its_grant("producer", runs, &password).await;
}

/// How a worker lacking one grant ended.
struct DeniedRun {
    grant: &'static str,
    want: String,
    code: i32,
    took: Duration,
    message: String,
    log: String,
}

/// Runs a worker lacking one grant until it exits.
async fn denied_run(
    cmd: Command,
    log_name: String,
    termination: PathBuf,
    grant: &'static str,
    want: String,
) -> DeniedRun {
    let started = std::time::Instant::now();
    let mut c = ChildProcess::spawn(cmd, &log_name);
    let code = exit_code(&mut c, Duration::from_secs(90)).await;
    DeniedRun {
        grant,
        want,
        code,
        took: started.elapsed(),
        message: std::fs::read_to_string(&termination).unwrap_or_default(),
        log: c.log_text(),
    }
}

/// Every `worker` lacking a grant exited non-zero naming it, the password
/// nowhere; a table row each.
async fn assert_each_names_its_grant(
    worker: &str,
    runs: impl IntoIterator<Item = impl std::future::Future<Output = DeniedRun>>,
    password: &str,
) {
    println!("| {worker}: grant removed | exit after | termination message |");
    for r in futures::future::join_all(runs).await {
        let DeniedRun {
            grant,
            want,
            code,
            took,
            message,
            log,
        } = r;
        println!("| {grant} | {:.1} s | {message} |", took.as_secs_f64());
        assert_ne!(code, 0, "without {grant}: {log}");
        assert!(
            message.contains(&format!("this {worker} was denied by Kafka's ACLs"))
                && message.contains(&want),
            "without {grant}: {message:?} does not say {want:?}"
        );
        assert!(!message.contains(password) && !log.contains(password));
    }
}
