//! Consumer replicas as real `twitterstream-consumer` processes, and what
//! the tests read back from them: metrics and the published windows.

use crate::{eventually, kafka_brokers, unique_name};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twitterstream_workers::consumer::aggregate::WindowResult;

/// The consumer binary (built on first use); `TWS_CONSUMER_BIN` overrides,
/// e.g. to run a test against an older build.
pub fn consumer_binary() -> PathBuf {
    match std::env::var("TWS_CONSUMER_BIN") {
        Ok(p) => PathBuf::from(p),
        Err(_) => crate::process::binary("twitterstream-workers", "twitterstream-consumer"),
    }
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::process::free_port()))
}

/// A consumer replica process; killed when dropped.
pub struct Replica {
    pub name: String,
    args: Vec<String>,
    http: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
}

impl Replica {
    pub fn start(name: &str, args: &[String]) -> Replica {
        let mut r = Replica {
            name: name.to_owned(),
            args: args.to_vec(),
            http: free_addr(),
            child: None,
            log: std::env::temp_dir().join(format!("{name}.log")),
        };
        r.spawn();
        r
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("replica log file");
        let child = Command::new(consumer_binary())
            .args(&self.args)
            .args(["--http-addr", &self.http.to_string()])
            // The transactional ids derive from it: a restart fences the
            // killed process's transactions.
            .env("TWS_INSTANCE", &self.name)
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the consumer");
        eprintln!(
            "replica {} pid {} log {}",
            self.name,
            child.id(),
            self.log.display()
        );
        self.child = Some(child);
    }

    /// Everything the replica wrote (every run of it, appended).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Prints where each of the running replica's threads is (gdb's
    /// backtraces, this project's and librdkafka's frames only): what a
    /// test shows when the replica stopped making progress.
    pub fn show_threads(&self) {
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else {
            return;
        };
        let out = Command::new("timeout")
            .args(["30", "gdb", "-p", &pid.to_string(), "-batch", "-nx"])
            .args(["-ex", "set pagination off", "-ex", "thread apply all bt 40"])
            .stdin(Stdio::null())
            .output();
        let Ok(out) = out else {
            eprintln!("{}: no gdb here to show its threads", self.name);
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let frames: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("Thread ")
                    || l.contains("twitterstream")
                    || l.contains("rd_kafka_")
                    || l.contains("rdkafka::")
            })
            .collect();
        eprintln!(
            "---- {} (pid {pid}): its threads ----\n{}",
            self.name,
            frames.join("\n")
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = c.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "sending SIGTERM");
        let status = eventually(
            "the replica to exit after SIGTERM",
            Duration::from_secs(60),
            || std::future::ready(c.try_wait().ok().flatten()),
        )
        .await;
        assert!(
            status.success(),
            "replica {} exited with {status}",
            self.name
        );
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http, path).await
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        crate::process::show_tail_if_failing(&self.name, &self.log);
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Where a test replica reads and writes, and its window shape.
pub struct ReplicaArgs<'a> {
    pub topic: &'a str,
    pub stream: &'a str,
    pub group: &'a str,
    pub output: &'a str,
    /// Window size and slide, seconds.
    pub window: (i64, i64),
}

impl ReplicaArgs<'_> {
    /// The command line: these, every top hashtag and mention up to 1000
    /// (the truth compares whole lists), and `extra`.
    pub fn with(&self, extra: &[&str]) -> Vec<String> {
        let (size, slide) = (self.window.0.to_string(), self.window.1.to_string());
        let brokers = kafka_brokers();
        [
            "--brokers",
            &brokers,
            "--topic",
            self.topic,
            "--stream-name",
            self.stream,
            "--group-id",
            self.group,
            "--window-seconds",
            &size,
            "--slide-seconds",
            &slide,
            "--output-topic",
            self.output,
            "--top-n",
            "1000",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    }
}

/// Sum of a metric's samples (without labels or with any labels).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every committed record of the output topic, from the beginning, of
/// every partition (in order within each).
pub fn read_output(topic: &str) -> Vec<(String, WindowResult)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique_name("reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("reader");
    // Up to a minute: a campaign scenario's broker restart (tests/env/kill-
    // broker) can keep metadata away longer than one 10 s request, and a
    // reader that panicked then failed the scenarios running beside it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let metadata = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(m) => break m,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reading {topic}: metadata: {e}; asking again");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("metadata of {topic}: {e}"),
        }
    };
    let partitions = metadata
        .topics()
        .first()
        .map_or(1, |t| t.partitions().len().max(1));
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut at_end = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let value: WindowResult =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("result JSON");
                out.push((key, value));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if at_end.len() == partitions {
                    return out;
                }
            }
            Some(Err(e)) => panic!("reading output: {e}"),
            None => {}
        }
    }
    panic!("did not reach the end of {topic}");
}

pub async fn wait_for_windows(output: &str, n: usize, timeout: Duration) {
    let output = output.to_owned();
    eventually(&format!("{n} windows in {output}"), timeout, || {
        let output = output.clone();
        async move {
            let got = tokio::task::spawn_blocking(move || read_output(&output))
                .await
                .expect("reader task");
            (got.len() >= n).then_some(())
        }
    })
    .await;
}

pub async fn wait_ready(r: &Replica) {
    eventually(
        &format!("{} /readyz", r.name),
        Duration::from_secs(90),
        || async { r.get("/readyz").await.filter(|(s, _)| *s == 200) },
    )
    .await;
}
