//! Wiring: topology discovery, the two stage threads, the HTTP server, and
//! shutdown on SIGTERM/SIGINT.
//!
//! ```text
//! tweets ─► aggregate stage (group <group>) ─► <group>-partials ─► merge stage (group <group>-merge) ─► output topic / stdout
//! ```
//!
//! Both stages run in every replica. Each is a plain thread around a
//! librdkafka consumer: the work per record is CPU-bound and the Kafka calls
//! block, so an async runtime would only add hand-offs.

use crate::consumer::aggregate_stage::AggregateStage;
use crate::consumer::merge_stage::MergeStage;
use crate::consumer::metrics::{Health, Metrics};
use crate::consumer::partials;
use crate::consumer::postgres::{PostgresSink, SinkWatch};
use crate::consumer::probes::ConsumerProbes;
use crate::consumer::stage::{Driver, StageConfig};
use crate::consumer::window::{WindowError, WindowSpec};
use crate::kafka::{AuthContext, AuthWatch, CredentialFiles, KafkaClients, Refused};
use crate::ops;
use crate::shutdown::{Shutdown, shutdown_on_signals};
use rdkafka::consumer::BaseConsumer;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use twitterstream_contract::consumer::{ConsumerArgs, StartFrom};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("window configuration: {0}")]
    Window(#[from] WindowError),
    #[error("serving HTTP on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("starting a stage thread: {0}")]
    Thread(std::io::Error),
    #[error("starting the worker pool: {0}")]
    Pool(rayon::ThreadPoolBuildError),
    #[error("a stage thread panicked")]
    Panicked,
    /// The brokers kept refusing the clients' login or operations
    /// (`kafka.rs`).
    #[error("this consumer {0}")]
    KafkaRefused(crate::kafka::Refused),
    /// The writes to PostgreSQL kept failing (`postgres.rs`).
    #[error(
        "this consumer could not write to PostgreSQL for {grace_seconds} s (the connection Secret, the database, the user's privileges or the server): {last}"
    )]
    Postgres { grace_seconds: u64, last: String },
}

/// How long the stages may take to stop after a signal.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The windows the flags ask for.
pub fn window_spec(args: &ConsumerArgs) -> WindowSpec {
    WindowSpec {
        size: Duration::from_secs(args.window_seconds),
        slide: Duration::from_secs(args.slide()),
        allowed_lateness: Duration::from_secs(args.allowed_lateness_seconds),
        idle_timeout: Duration::from_secs(args.idle_partition_seconds),
        max_future_skew: Some(Duration::from_secs(args.max_future_skew_seconds)),
    }
}

/// Identifies this replica across restarts, so that a restarted replica's
/// transactional producers fence the ones it left behind. In Kubernetes this
/// is the pod name.
pub(crate) fn instance_name() -> String {
    for var in ["TWS_INSTANCE", "POD_NAME", "HOSTNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.trim().is_empty()
        {
            return v.trim().to_owned();
        }
    }
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "consumer".to_owned())
}

/// Source partition count, partials partition count.
struct Topology {
    source_partitions: i32,
    partials_partitions: i32,
}

/// How long one topic lookup waits for the brokers.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Partition and replica counts of `topic`, on a client of its own whose
/// refusals reach the watch; an answer of any kind counts as a login
/// accepted.
async fn describe(
    kafka: &KafkaClients,
    topic: String,
) -> Result<(i32, i32), partials::TopologyError> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer<AuthContext> = kafka
            .config()?
            .create_with_context(kafka.context())
            .map_err(|source| partials::TopologyError::Metadata {
                topic: topic.clone(),
                source,
            })?;
        let r = partials::describe(&client, &topic, METADATA_TIMEOUT);
        if r.as_ref()
            .map_or_else(partials::TopologyError::answered, |_| true)
        {
            kafka.auth.succeeded();
        }
        r
    })
    .await
    .unwrap_or_else(|_| {
        Err(partials::TopologyError::Missing {
            topic: "(metadata task failed)".to_owned(),
        })
    })
}

/// The source topic's and the partials topic's partition counts, the
/// partials topic created when missing.
async fn discover(
    args: &ConsumerArgs,
    kafka: &KafkaClients,
) -> Result<Topology, partials::TopologyError> {
    let (source_partitions, replication) = describe(kafka, args.topic.clone()).await?;
    let partials_topic = partials::topic_name(args.group());
    let partials_partitions = match describe(kafka, partials_topic.clone()).await {
        Err(partials::TopologyError::Missing { .. }) => {
            partials::ensure_topic(kafka, &partials_topic, source_partitions, replication).await?;
            describe(kafka, partials_topic).await?.0
        }
        other => other?.0,
    };
    Ok(Topology {
        source_partitions,
        partials_partitions,
    })
}

/// How the wait for the topics ended.
enum Discovered {
    Found(Topology),
    Stop,
    Refused(Refused),
}

/// Looks the topics up until they are there, with a growing pause; a
/// denial goes to the watch, and a signal or a refusal that lasted the
/// grace ends the wait at once (a signal waited out a 30 s pause before).
async fn wait_for_topics(
    args: &ConsumerArgs,
    kafka: &KafkaClients,
    signal: &mut Shutdown,
    grace: Duration,
) -> Discovered {
    let mut backoff = Duration::ZERO;
    loop {
        let attempt = async {
            tokio::time::sleep(backoff).await;
            discover(args, kafka).await
        };
        tokio::select! {
            _ = signal.wait() => return Discovered::Stop,
            refused = kafka.auth.failed_for(grace) => return Discovered::Refused(refused),
            r = attempt => match r {
                Ok(t) => {
                    kafka.auth.allowed(DISCOVERY);
                    return Discovered::Found(t);
                }
                Err(partials::TopologyError::Denied(refusal)) => {
                    kafka.auth.denied(DISCOVERY, refusal);
                }
                Err(e) => {
                    kafka.auth.allowed(DISCOVERY);
                    tracing::warn!(error = %e, "waiting for the topics");
                }
            }
        }
        backoff = (backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
    }
}

/// Who asks for the topics, for the watch's denials.
const DISCOVERY: &str = "topology discovery";

/// Runs the consumer until SIGTERM/SIGINT, then commits what is complete and
/// returns.
pub async fn run(args: ConsumerArgs) -> Result<(), PipelineError> {
    let spec = window_spec(&args);
    // Reject a bad spec before touching Kafka.
    crate::consumer::window::WindowEngine::with_mode(spec, args.time_mode)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let stop = Arc::new(AtomicBool::new(false));
    // The ops server stops last, once the stages are done (or on a signal
    // before they started).
    let (stop_http, http_stop) = Shutdown::new();
    let auth = AuthWatch::default();
    let probes = ConsumerProbes {
        metrics: metrics.clone(),
        health: health.clone(),
        auth: auth.clone(),
    };
    let (_, http) = ops::serve(args.http_addr, probes, http_stop)
        .await
        .map_err(|source| PipelineError::Http {
            addr: args.http_addr,
            source,
        })?;
    let mut signal = shutdown_on_signals();
    let brokers = args.brokers.join(",");
    let kafka = KafkaClients {
        brokers: brokers.clone(),
        security: args.kafka_security.clone(),
        auth: auth.clone(),
    };
    let grace = args.kafka_security.kafka_auth_grace_seconds;
    let group = args.group().to_owned();
    let topology =
        match wait_for_topics(&args, &kafka, &mut signal, Duration::from_secs(grace)).await {
            Discovered::Found(t) => t,
            ended => {
                let _ = stop_http.send(true);
                let _ = http.await;
                return match ended {
                    Discovered::Refused(refused) => Err(PipelineError::KafkaRefused(refused)),
                    _ => Ok(()),
                };
            }
        };
    tracing::info!(
        source_partitions = topology.source_partitions,
        partials_partitions = topology.partials_partitions,
        "topology"
    );
    health.kafka_ok(chrono::Utc::now().timestamp_millis());

    // Both stages prepare records (parse, score) on one pool; rayon's
    // default size (threads = 0) is a thread per CPU the process may use.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .thread_name(|i| format!("prepare-{i}"))
        .build()
        .map(Arc::new)
        .map_err(PipelineError::Pool)?;
    let instance = instance_name();
    let partials_topic = partials::topic_name(&group);
    let commit_interval = Duration::from_millis(100);
    // One flag per stage: each ends its session once.
    let relogin = [(); 2].map(|()| Arc::new(AtomicBool::new(false)));
    let aggregate = Driver::new(
        StageConfig {
            stage: "aggregate",
            brokers: brokers.clone(),
            security: args.kafka_security.clone(),
            auth: auth.clone(),
            group_id: group.clone(),
            topic: args.topic.clone(),
            transactional_id: Some(format!("{group}-{instance}-aggregate")),
            writes_to: Some(partials_topic.clone()),
            earliest: args.start_from == StartFrom::Earliest,
            commit_interval,
            report_lag: true,
            observe_group: true,
            relogin: relogin[0].clone(),
            max_per_second: args.max_tweets_per_second,
        },
        AggregateStage::new(
            &args.stream_name,
            spec,
            args.time_mode,
            &partials_topic,
            topology.partials_partitions,
            topology.source_partitions,
            metrics.clone(),
        )?,
        pool.clone(),
        metrics.clone(),
        health.clone(),
        stop.clone(),
    );
    let sink_watch = SinkWatch::default();
    let sink = args.postgres.postgres_dir.as_ref().map(|_| {
        PostgresSink::new(
            args.postgres.clone(),
            &args.stream_namespace,
            tokio::runtime::Handle::current(),
            metrics.clone(),
            sink_watch.clone(),
        )
    });
    let merge = Driver::new(
        StageConfig {
            stage: "merge",
            brokers,
            security: args.kafka_security.clone(),
            auth: auth.clone(),
            group_id: format!("{group}-merge"),
            topic: partials_topic,
            transactional_id: args
                .output_topic
                .as_ref()
                .map(|_| format!("{group}-{instance}-merge")),
            writes_to: args.output_topic.clone(),
            earliest: true,
            commit_interval,
            report_lag: false,
            observe_group: false,
            relogin: relogin[1].clone(),
            max_per_second: None,
        },
        MergeStage::new(
            &args.stream_name,
            args.top_n,
            &spec,
            topology.source_partitions,
            args.output_topic.as_deref(),
            args.prints(),
            metrics.clone(),
        )
        .storing(sink.is_some()),
        pool,
        metrics.clone(),
        health.clone(),
        stop.clone(),
    );
    let merge = match sink {
        Some(sink) => merge.with_sink(Box::new(sink)),
        None => merge,
    };
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<&'static str>(2);
    let mut threads = Vec::new();
    for (name, job) in [
        (
            "aggregate",
            Box::new(move || aggregate.run()) as Box<dyn FnOnce() + Send>,
        ),
        ("merge", Box::new(move || merge.run())),
    ] {
        let done = done_tx.clone();
        let t = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                job();
                let _ = done.blocking_send(name);
            })
            .map_err(PipelineError::Thread)?;
        threads.push(t);
    }
    let mut failure = None;
    loop {
        tokio::select! {
            _ = signal.wait() => {
                tracing::info!("shutting down: committing what is complete");
                break;
            }
            refused = auth.failed_for(Duration::from_secs(grace)) => {
                health.broken.store(true, Ordering::SeqCst);
                failure = Some(PipelineError::KafkaRefused(refused));
                break;
            }
            last = sink_watch.failing_for(Duration::from_secs(args.postgres.postgres_grace_seconds)) => {
                health.broken.store(true, Ordering::SeqCst);
                failure = Some(PipelineError::Postgres {
                    grace_seconds: args.postgres.postgres_grace_seconds,
                    last,
                });
                break;
            }
            Some(name) = done_rx.recv() => {
                health.broken.store(true, Ordering::SeqCst);
                tracing::error!(stage = name, "a stage ended on its own");
                break;
            }
            // Refused clients cannot commit, so no commit notices the new
            // files: the stages are told to log in again.
            () = auth.refused_after_rotation(CredentialFiles::new(&args.kafka_security)) => {
                tracing::info!("the brokers refuse the clients and the credential files changed: every stage logs in again");
                for flag in &relogin {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    // Bounded: once a stage has committed, what remains is closing its
    // clients, and librdkafka's close once hung for over a minute after the
    // group revoke (campaign, 2026-11-27). Exiting then loses nothing: the
    // output is transactional, and whatever was not committed is redone by
    // the partitions' next owner.
    let join = tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok()));
    let joined = match tokio::time::timeout(STOP_GRACE, join).await {
        Ok(joined) => joined.unwrap_or(false),
        Err(_) => {
            tracing::warn!(grace = ?STOP_GRACE, "a stage did not stop in time; exiting without it (its uncommitted work is redone by the next owner)");
            true
        }
    };
    let _ = stop_http.send(true);
    let _ = http.await;
    match failure {
        Some(e) => Err(e),
        None if joined => Ok(()),
        None => Err(PipelineError::Panicked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_spec_follows_the_flags() {
        use clap::Parser;
        let args = ConsumerArgs::try_parse_from([
            "c",
            "--brokers=k:1",
            "--topic=t",
            "--stream-name=s",
            "--window-seconds=60",
            "--slide-seconds=15",
            "--allowed-lateness-seconds=5",
            "--idle-partition-seconds=7",
        ])
        .unwrap();
        let want = WindowSpec {
            size: Duration::from_secs(60),
            slide: Duration::from_secs(15),
            allowed_lateness: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(7),
            max_future_skew: Some(Duration::from_secs(300)),
        };
        assert_eq!(window_spec(&args), want);
    }
}
