//! The docs' checked sections: README.md and the pages under docs/.
//!
//! - The metrics list (docs/metrics.md) is generated from the real registries
//!   of the operator, the producer and the consumer: each is built as the
//!   binaries build it, encoded, and its `# HELP` / `# TYPE` lines and sample
//!   labels read back. `TWS_UPDATE_DOCS=1` rewrites the region instead of
//!   failing. Every family the sources register must be in it.
//! - docs/troubleshooting.md is hand-written; this test checks that what it
//!   names exists: environment variables, metrics, operator reasons and quoted
//!   log messages.
//! - Every page: each ```yaml block holding a Kubernetes object is checked
//!   against the CRD (offline against its schema; with `KUBECONFIG` set, by a
//!   server-side dry run on the real apiserver), every metric name must be
//!   exported, no text tells users to put a variable in `spec.*.env` that the
//!   CRD refuses, and a `kubectl get tws` header shows the CRD's columns.
//!
//! (The TwitterStream reference is checked by the xtask crate's own tests;
//! `cargo xtask docs` rewrites every generated region.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use xtask::readme::{region, replace_region, same_contents};

const REFRESH: &str = "cargo xtask docs";
const METRICS_REGION: &str = "metrics";
const METRICS_PAGE: &str = "docs/metrics.md";
const TROUBLESHOOTING_REGION: &str = "troubleshooting";
const TROUBLESHOOTING_PAGE: &str = "docs/troubleshooting.md";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

/// README.md and every page under docs/, as (path relative to the root,
/// text), in a stable order.
fn pages() -> Vec<(String, String)> {
    let mut out = vec![("README.md".to_string(), read("README.md"))];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    for p in docs {
        let name = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(&p).expect("a readable page");
        out.push((name, text));
    }
    assert!(
        out.len() > 5,
        "README.md and docs/*.md: only {} pages",
        out.len()
    );
    out
}

// ---------------------------------------------------------------- metrics

/// One binary's registry, encoded after every labelled family got one series:
/// a family prints its label names only once a series exists.
struct Binary {
    title: &'static str,
    intro: &'static str,
    encoded: String,
}

fn binaries() -> Vec<Binary> {
    let operator = {
        let m = twitterstream_operator::metrics::Metrics::default();
        m.failed("KafkaUnreachable");
        m.scaled("up");
        let demo = twitterstream_operator::metrics::StreamLabels {
            namespace: "ns".into(),
            name: "demo".into(),
        };
        m.stream(
            &demo,
            &twitterstream_operator::metrics::StreamFigures {
                published_per_second: Some(1.0),
                consumed_per_second: Some(1.0),
                last_window_delay_seconds: Some(1),
                ..Default::default()
            },
        );
        m.encode()
    };
    let producer = {
        let m = twitterstream_workers::producer::metrics::Metrics::new();
        m.request("200");
        m.transaction("committed");
        m.encode()
    };
    let consumer = {
        use twitterstream_workers::consumer::metrics::{
            Metrics, PartitionLabels, ReasonLabels, StageLabels,
        };
        let m = Metrics::new();
        m.postgres_errors
            .get_or_create(&ReasonLabels {
                reason: "PostgresUnavailable",
            })
            .inc();
        m.consumer_lag
            .get_or_create(&PartitionLabels { partition: 0 })
            .set(0);
        let stage = StageLabels { stage: "aggregate" };
        for family in [
            &m.transactions,
            &m.transactions_aborted,
            &m.rebalances,
            &m.kafka_errors,
        ] {
            family.get_or_create(&stage).inc();
        }
        m.encode().expect("the consumer's registry encodes")
    };
    vec![
        Binary {
            title: "Operator (`twitterstream-operator`)",
            intro: "`GET /metrics` on `--http-addr` (default `0.0.0.0:8080`).",
            encoded: operator,
        },
        Binary {
            title: "Producer (`twitterstream-producer`)",
            intro: "`GET /metrics` on port 8080 of each producer pod (container port `http`).",
            encoded: producer,
        },
        Binary {
            title: "Consumer (`twitterstream-consumer`)",
            intro: "`GET /metrics` on port 8080 of each consumer pod (container port `http`); every replica reports its own share.",
            encoded: consumer,
        },
    ]
}

/// What a label's values mean, from the code that sets them. `literals` are
/// values the code writes as string literals: each must appear in `text`
/// and, quoted, in the sources under `source`.
struct LabelNote {
    family: &'static str,
    label: &'static str,
    text: &'static str,
    literals: &'static [&'static str],
    source: &'static str,
}

const STAGE_TEXT: &str = "pipeline stage: `aggregate` (reads the tweet topic, writes partial aggregates) or `merge` (reads the partials, publishes final windows)";

const LABEL_NOTES: &[LabelNote] = &[
    LabelNote {
        family: "twitterstream_operator_reconcile_failures",
        label: "reason",
        text: "the error's reason, also the Warning Event's: `KafkaUnreachable`, `KafkaAuthenticationFailed`, `KafkaAuthorizationFailed`, `KafkaSecurityMisconfigured`, `PartitionsCannotShrink`, `TopicAdminFailed`, `KafkaClientError`, `KubernetesApiError`, `NoNamespace`",
        literals: &[
            "KafkaUnreachable",
            "KafkaAuthenticationFailed",
            "KafkaAuthorizationFailed",
            "KafkaSecurityMisconfigured",
            "PartitionsCannotShrink",
            "TopicAdminFailed",
            "KafkaClientError",
            "KubernetesApiError",
            "NoNamespace",
        ],
        source: "operator/src",
    },
    LabelNote {
        family: "twitterstream_operator_stream_",
        label: "namespace",
        text: "the TwitterStream's namespace",
        literals: &[],
        source: "operator/src",
    },
    LabelNote {
        family: "twitterstream_operator_stream_",
        label: "name",
        text: "the TwitterStream's name",
        literals: &[],
        source: "operator/src",
    },
    LabelNote {
        family: "twitterstream_operator_consumer_scalings",
        label: "direction",
        text: "`up` or `down`",
        literals: &["up", "down"],
        source: "operator/src",
    },
    LabelNote {
        family: "twitterstream_producer_api_requests",
        label: "status",
        text: "HTTP status of the X API answer (`200`, `400`, `401`, `403`, `429`, `5xx`), or `error` for timeouts and transport failures",
        literals: &["200", "400", "429", "error"],
        source: "workers/src/producer",
    },
    LabelNote {
        family: "twitterstream_producer_transactions",
        label: "outcome",
        text: "`committed` or `aborted`",
        literals: &["committed", "aborted"],
        source: "workers/src/producer",
    },
    LabelNote {
        family: "twitterstream_consumer_lag",
        label: "partition",
        text: "a partition of the tweet topic assigned to this replica",
        literals: &[],
        source: "workers/src/consumer",
    },
    LabelNote {
        family: "twitterstream_consumer_transactions",
        label: "stage",
        text: STAGE_TEXT,
        literals: &["aggregate", "merge"],
        source: "workers/src/consumer",
    },
    LabelNote {
        family: "twitterstream_consumer_transactions_aborted",
        label: "stage",
        text: STAGE_TEXT,
        literals: &["aggregate", "merge"],
        source: "workers/src/consumer",
    },
    LabelNote {
        family: "twitterstream_consumer_rebalances",
        label: "stage",
        text: STAGE_TEXT,
        literals: &["aggregate", "merge"],
        source: "workers/src/consumer",
    },
    LabelNote {
        family: "twitterstream_consumer_kafka_errors",
        label: "stage",
        text: STAGE_TEXT,
        literals: &["aggregate", "merge"],
        source: "workers/src/consumer",
    },
    LabelNote {
        family: "twitterstream_consumer_postgres_errors",
        label: "reason",
        text: "why the write failed: `PostgresAuthentication`, `PostgresDatabaseMissing`, `PostgresPermissionDenied`, `PostgresUnavailable`, `PostgresTLS`, `PostgresConfig`, `PostgresMigration`, or `PostgresError` for any other error",
        literals: &[
            "PostgresAuthentication",
            "PostgresDatabaseMissing",
            "PostgresPermissionDenied",
            "PostgresUnavailable",
            "PostgresTLS",
            "PostgresConfig",
            "PostgresMigration",
            "PostgresError",
        ],
        source: "workers/src/consumer",
    },
];

impl LabelNote {
    /// Whether the note is about `family`: its name, or a prefix of it
    /// ending in `_` (one note for a group of families).
    fn covers(&self, family: &str) -> bool {
        self.family == family || (self.family.ends_with('_') && family.starts_with(self.family))
    }
}

/// A metric family as the OpenMetrics text shows it.
#[derive(Debug, Default, PartialEq)]
struct Family {
    name: String,
    type_: String,
    help: String,
    labels: BTreeSet<String>,
    samples: usize,
    /// Finite histogram bucket bounds.
    buckets: Vec<f64>,
}

/// Reads families from OpenMetrics text: `# HELP`, `# TYPE` and the samples
/// that follow them (samples always come right after their family's header).
fn parse(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if families.last().is_none_or(|f| f.name != name) {
                families.push(Family {
                    name: name.to_string(),
                    ..Family::default()
                });
            }
            let f = families.last_mut().unwrap();
            f.help = help.replace("\\n", "\n").replace("\\\\", "\\");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, type_) = rest.split_once(' ').unwrap_or((rest, ""));
            if families.last().is_none_or(|f| f.name != name) {
                families.push(Family {
                    name: name.to_string(),
                    ..Family::default()
                });
            }
            families.last_mut().unwrap().type_ = type_.to_string();
        } else if line.starts_with('#') || line.trim().is_empty() {
            continue;
        } else {
            let f = families
                .last_mut()
                .unwrap_or_else(|| panic!("sample before any family: {line}"));
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let sample = &line[..name_end];
            let suffix = sample
                .strip_prefix(f.name.as_str())
                .unwrap_or_else(|| panic!("sample {sample} outside family {}", f.name));
            assert!(
                [
                    "", "_total", "_bucket", "_sum", "_count", "_created", "_info"
                ]
                .contains(&suffix),
                "sample {sample} does not belong to {}",
                f.name
            );
            f.samples += 1;
            if line[name_end..].starts_with('{') {
                for (k, v) in parse_labels(&line[name_end + 1..]) {
                    if k == "le" {
                        if let Ok(b) = v.parse::<f64>()
                            && b.is_finite()
                        {
                            f.buckets.push(b);
                        }
                    } else {
                        f.labels.insert(k);
                    }
                }
            }
        }
    }
    families
}

/// `a="x",b="y\"z"} 1` -> [(a, x), (b, y"z)].
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(
            chars.next(),
            Some('"'),
            "label {key} has no quoted value in {s}"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
        match chars.next() {
            Some(',') if chars.peek() != Some(&'}') => continue,
            _ => break,
        }
    }
    out
}

fn number(v: f64) -> String {
    format!("{v}")
}

fn metrics_markdown() -> String {
    let mut out = String::from(
        "Generated from the registries of the three binaries. All are served as OpenMetrics text; counters carry \
         the `_total` suffix, histograms the `_bucket`, `_sum` and `_count` series.\n",
    );
    for b in binaries() {
        let _ = write!(
            out,
            "\n### {}\n\n{}\n\n| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n",
            b.title, b.intro
        );
        for f in parse(&b.encoded) {
            let name = match f.type_.as_str() {
                "counter" => format!("`{}_total`", f.name),
                _ => format!("`{}`", f.name),
            };
            let type_ = match (f.type_.as_str(), f.buckets.as_slice()) {
                ("histogram", [first, .., last]) => format!(
                    "histogram ({} buckets, {} to {})",
                    f.buckets.len(),
                    number(*first),
                    number(*last)
                ),
                (t, _) => t.to_string(),
            };
            let labels: Vec<String> = f
                .labels
                .iter()
                .map(|l| {
                    let note = LABEL_NOTES
                        .iter()
                        .find(|n| n.covers(&f.name) && n.label == l)
                        .map(|n| n.text)
                        .unwrap_or("(undocumented)");
                    format!("`{l}`: {note}")
                })
                .collect();
            let _ = writeln!(
                out,
                "| {name} | {type_} | {} | {} |",
                labels.join("; ").replace('|', "\\|"),
                f.help.replace('|', "\\|")
            );
        }
    }
    out
}

#[test]
fn parses_openmetrics_families() {
    let text = "# HELP a_requests Requests by status.\n# TYPE a_requests counter\n\
                a_requests_total{status=\"200\",path=\"/x,\\\"y\\\"\"} 3\n\
                # HELP a_latency Time.\n# TYPE a_latency histogram\n\
                a_latency_sum 0.0\na_latency_count 0\n\
                a_latency_bucket{le=\"0.5\"} 0\na_latency_bucket{le=\"1.0\"} 0\na_latency_bucket{le=\"+Inf\"} 0\n\
                # HELP a_up Up.\n# TYPE a_up gauge\n# EOF\n";
    let got = parse(text);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].name, "a_requests");
    assert_eq!(got[0].type_, "counter");
    assert_eq!(got[0].help, "Requests by status.");
    assert_eq!(
        got[0].labels,
        BTreeSet::from(["path".to_string(), "status".to_string()])
    );
    assert_eq!(got[1].buckets, vec![0.5, 1.0]);
    assert!(got[1].labels.is_empty());
    assert_eq!((got[2].type_.as_str(), got[2].samples), ("gauge", 0));
    assert_eq!(
        parse_labels("k=\"a\\\"b\",j=\"c\"} 1"),
        vec![("k".into(), "a\"b".into()), ("j".into(), "c".into())]
    );
}

/// Files under `dir` (relative to the workspace) ending in `.rs`, concatenated.
fn sources(dir: &str) -> String {
    fn walk(p: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                walk(&e, out);
            } else if e.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&e).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    walk(&root().join(dir), &mut out);
    assert!(!out.is_empty(), "no sources under {dir}");
    out
}

#[test]
fn every_metric_is_documented_with_its_labels() {
    let mut seen: BTreeMap<(String, String), ()> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for b in binaries() {
        let families = parse(&b.encoded);
        assert!(!families.is_empty(), "{}: empty registry", b.title);
        for f in families {
            assert!(names.insert(f.name.clone()), "{} registered twice", f.name);
            assert!(!f.help.is_empty(), "{} has no help text", f.name);
            // A plain counter or gauge always prints one sample; none means a
            // Family that this test did not give a series, so its labels
            // would be missing from docs/metrics.md.
            assert!(
                f.samples > 0,
                "{} printed no sample: give it a series in binaries() so its labels show",
                f.name
            );
            for l in &f.labels {
                seen.insert((f.name.clone(), l.clone()), ());
            }
        }
    }
    for n in LABEL_NOTES {
        let covered: Vec<(String, String)> = seen
            .keys()
            .filter(|(f, l)| n.covers(f) && l == n.label)
            .cloned()
            .collect();
        assert!(
            !covered.is_empty(),
            "note for {} label {} that the registry does not have",
            n.family,
            n.label
        );
        for k in covered {
            seen.remove(&k);
        }
        let code = sources(n.source);
        for lit in n.literals {
            assert!(
                n.text.contains(&format!("`{lit}`")),
                "{}: `{lit}` missing in the note",
                n.family
            );
            assert!(
                code.contains(&format!("\"{lit}\"")),
                "{}: \"{lit}\" does not occur in {}",
                n.family,
                n.source
            );
        }
    }
    assert!(seen.is_empty(), "labels without a note: {seen:?}");
}

/// String literals of Rust source, in order (escapes resolved roughly: a
/// backslash keeps the next character).
fn string_literals(src: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let bytes: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            '/' if bytes.get(i + 1) == Some(&'/') => {
                while i < bytes.len() && bytes[i] != '\n' {
                    i += 1;
                }
            }
            '\'' => {
                // A char literal ('"' among them) or a lifetime.
                if bytes.get(i + 2) == Some(&'\'') {
                    i += 3;
                    continue;
                } else if bytes.get(i + 1) == Some(&'\\') && bytes.get(i + 3) == Some(&'\'') {
                    i += 4;
                    continue;
                }
                i += 1;
                continue;
            }
            '"' => {
                let start = i;
                let mut value = String::new();
                i += 1;
                while i < bytes.len() && bytes[i] != '"' {
                    if bytes[i] == '\\' {
                        i += 1;
                    }
                    if let Some(c) = bytes.get(i) {
                        value.push(*c);
                    }
                    i += 1;
                }
                out.push((start, i, value));
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The metric families a metrics.rs registers: its `Registry::with_prefix`
/// joined to every pair of string literals `("snake_name", "Help text"` that
/// open a parenthesis with only a comma between them, which is how a
/// `registry.register(` call (or a tuple of a loop that registers) names a
/// family and its help.
fn registered_families(src: &str) -> Vec<String> {
    let literals = string_literals(src);
    let chars: Vec<char> = src.chars().collect();
    let prefix = src
        .find("Registry::with_prefix(\"")
        .map(|at| {
            let rest = &src[at + "Registry::with_prefix(\"".len()..];
            rest[..rest.find('"').unwrap_or(0)].to_string()
        })
        .unwrap_or_default();
    let snake = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    literals
        .windows(2)
        .filter(|w| {
            let between: String = chars[w[0].1 + 1..w[1].0].iter().collect();
            let before = chars[..w[0].0].iter().rev().find(|c| !c.is_whitespace());
            before == Some(&'(')
                && between.trim() == ","
                && snake(&w[0].2)
                && w[1]
                    .2
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
        })
        .map(|w| {
            if prefix.is_empty() {
                w[0].2.clone()
            } else {
                format!("{prefix}_{}", w[0].2)
            }
        })
        .collect()
}

/// Every metrics.rs of the operator and the workers, as (path, text).
fn metrics_sources() -> Vec<(String, String)> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n == "metrics.rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("operator/src"), &mut files);
    walk(&root().join("workers/src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable source");
            (
                p.strip_prefix(root()).unwrap_or(&p).display().to_string(),
                text,
            )
        })
        .collect()
}

#[test]
fn registered_families_are_read_from_the_source() {
    let src = r#"
        let mut registry = Registry::with_prefix("demo");
        for (name, help, family) in [
            ("stream_lag", "Records behind (status.lag)", &a),
            ("other", "Other", &b),
        ] { registry.register(name, help, family.clone()); }
        registry.register("requests", "Requests by status", c.clone());
        registry.register(
            "errors",
            "Errors, by reason",
            d.clone(),
        );
        let c = '"'; // "not", "Counted"
        tracing::info!(x = "quoted", "Message");
    "#;
    assert_eq!(
        registered_families(src),
        [
            "demo_stream_lag",
            "demo_other",
            "demo_requests",
            "demo_errors"
        ]
    );
}

#[test]
fn every_registered_family_is_in_the_generated_list() {
    let generated = exported_families();
    let mut registered = BTreeMap::new();
    for (file, text) in metrics_sources() {
        for family in registered_families(&text) {
            registered.insert(family, file.clone());
        }
    }
    let files: BTreeSet<&String> = registered.values().collect();
    assert!(
        files.len() >= 3 && registered.len() >= generated.len(),
        "found only {} families in {files:?}",
        registered.len()
    );
    let missing: Vec<String> = registered
        .iter()
        .filter(|(family, _)| !generated.contains(*family))
        .map(|(family, file)| format!("{family} (registered in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "registered but missing from the generated list in {METRICS_PAGE}: prometheus-client prints nothing for \
         a Family without a series, so give each of these a series in binaries(): {missing:#?}"
    );
}

#[test]
fn docs_metrics_are_up_to_date() {
    let generated = metrics_markdown();
    let text = read(METRICS_PAGE);
    let current = region(&text, METRICS_REGION)
        .unwrap_or_else(|e| panic!("{METRICS_PAGE} has no metrics markers: {e}"));
    if same_contents(current, &generated) {
        return;
    }
    if std::env::var_os("TWS_UPDATE_DOCS").is_some() {
        let updated = replace_region(&text, METRICS_REGION, &generated).expect("markers");
        std::fs::write(root().join(METRICS_PAGE), updated).expect("docs/metrics.md is writable");
        eprintln!("rewrote the metrics region of {METRICS_PAGE}");
        return;
    }
    panic!("{METRICS_PAGE}'s metrics list is stale: run `{REFRESH}`\n\ngenerated:\n{generated}");
}

// -------------------------------------------------------- troubleshooting

/// The lines of a Markdown text outside fenced code blocks, with their
/// 1-based numbers; a fence line itself is left out.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((n + 1, line));
        }
    }
    out
}

/// The prose of a Markdown text: its lines outside fenced blocks, joined.
fn prose(text: &str) -> String {
    prose_lines(text)
        .iter()
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

/// Inline code spans of a Markdown text (single backticks), outside fenced
/// code blocks.
fn code_spans(text: &str) -> Vec<String> {
    let prose = prose(text);
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Reasons the kubelet and scheduler set on pods; the operator copies them
/// into conditions but does not write them itself.
const KUBERNETES_REASONS: &[&str] = &[
    "FailedMount",
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "Unschedulable",
    "FailedScheduling",
    "OOMKilled",
];

/// Checks every name a troubleshooting text puts in inline code that can be
/// checked; returns how many it checked, or what does not exist.
fn check_names(section: &str) -> Result<usize, Vec<String>> {
    let operator = sources("operator/src");
    // The workers and their contract crate (workers/contract), which
    // holds their flags.
    let workers = sources("workers");
    let metric_names: BTreeSet<String> = binaries()
        .iter()
        .flat_map(|b| parse(&b.encoded))
        .flat_map(|f| {
            let base = f.name.clone();
            [
                base.clone(),
                format!("{base}_total"),
                format!("{base}_bucket"),
                format!("{base}_sum"),
                format!("{base}_count"),
            ]
        })
        .collect();
    let mut checked = 0;
    let mut errors = Vec::new();
    let mut check = |ok: bool, error: String| {
        checked += 1;
        if !ok {
            errors.push(error);
        }
    };
    for span in code_spans(section) {
        let span = span.trim();
        if span.contains('\n') {
            check(false, format!("unbalanced backticks near {span:?}"));
        } else if let Some(var) = span.split('=').next().filter(|v| v.starts_with("TWS_"))
            && var.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            let quoted = format!("\"{var}\"");
            check(
                workers.contains(&quoted) || operator.contains(&quoted),
                format!("{var} is not a variable the operator or the workers read"),
            );
        } else if span.starts_with("twitterstream_") && !span.contains(' ') {
            let name = span.split(['{', '[']).next().unwrap_or(span);
            check(metric_names.contains(name), format!("no metric {name}"));
        } else if span.len() > 2 && span.starts_with('"') && span.ends_with('"') {
            // A quoted log message or error text, verbatim from the code.
            let msg = &span[1..span.len() - 1];
            check(
                workers.contains(msg) || operator.contains(msg),
                format!("log text {span} does not occur in the sources"),
            );
        } else if span.len() > 3
            && span.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && span.chars().all(|c| c.is_ascii_alphanumeric())
            && span.chars().skip(1).any(|c| c.is_ascii_uppercase())
        {
            // A CamelCase reason or condition type.
            check(
                operator.contains(&format!("\"{span}\"")) || KUBERNETES_REASONS.contains(&span),
                format!(
                    "reason {span} is neither set by the operator nor a known Kubernetes reason"
                ),
            );
        } else if let Some(flag) = span.strip_prefix("--")
            && flag.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        {
            // A bare flag is one of the binaries' own (clap derives it from
            // the field name unless `long = "..."` says otherwise).
            let field = format!("pub {}:", flag.replace('-', "_"));
            let long = format!("long = \"{flag}\"");
            check(
                [&workers, &operator]
                    .iter()
                    .any(|src| src.contains(&field) || src.contains(&long)),
                format!("--{flag} is not a flag of the operator or the workers"),
            );
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}

#[test]
fn troubleshooting_names_only_what_exists() {
    let text = read(TROUBLESHOOTING_PAGE);
    let section = region(&text, TROUBLESHOOTING_REGION)
        .unwrap_or_else(|e| panic!("{TROUBLESHOOTING_PAGE} has no troubleshooting markers: {e}"));
    match check_names(section) {
        Ok(checked) => assert!(
            checked >= 30,
            "only {checked} checkable names in the section"
        ),
        Err(errors) => panic!("{TROUBLESHOOTING_PAGE}: {errors:#?}"),
    }
}

#[test]
fn troubleshooting_check_catches_what_does_not_exist() {
    let good = "`TWS_IDLE_PARTITION_SECONDS` `twitterstream_consumer_lag` `PartitionsCannotShrink` \
                `FailedMount` `--idle-partition-seconds` `\"X API rate limit hit (429)\"`\n\
                ```\n`NotChecked` inside a fence\n```\n";
    assert_eq!(check_names(good), Ok(6));
    let bad = "`TWS_NO_SUCH_VAR` `twitterstream_consumer_nothing_total` `PartitionsCanShrink` \
               `--no-such-flag` `\"no such log line\"`";
    assert_eq!(check_names(bad).map_err(|e| e.len()), Err(5));
}

// ------------------------------------------------- dashboard and alerts

/// Metrics the chart's dashboard and alerts may name that come from
/// elsewhere, and from where.
const EXTERNAL_METRICS: &[(&str, &str)] = &[
    (
        "kube_pod_container_status_waiting_reason",
        "kube-state-metrics",
    ),
    (
        "kube_pod_container_status_restarts_total",
        "kube-state-metrics",
    ),
];

/// The family names the binaries' registries print, as the generated list
/// in docs/metrics.md shows them (counters without `_total`).
fn exported_families() -> BTreeSet<String> {
    binaries()
        .iter()
        .flat_map(|b| parse(&b.encoded))
        .map(|f| f.name)
        .collect()
}

/// The sample names the binaries export (`_total`, `_bucket`, … included).
fn exported_samples() -> BTreeSet<String> {
    binaries()
        .iter()
        .flat_map(|b| {
            b.encoded
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The metric names a file mentions: words of `[a-z0-9_:]` that start with
/// `twitterstream_` or `kube_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("twitterstream_") || w.starts_with("kube_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let exported = exported_samples();
    for (file, at_least) in [
        (
            "charts/twitterstream-operator/dashboards/twitterstream.json",
            15,
        ),
        (
            "charts/twitterstream-operator/templates/prometheusrule.yaml",
            7,
        ),
    ] {
        let text = std::fs::read_to_string(root().join(file)).expect(file);
        let names = metric_names(&text);
        assert!(
            names.len() >= at_least,
            "{file} names {} metrics: {names:?}",
            names.len()
        );
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !exported.contains(*n) && !EXTERNAL_METRICS.iter().any(|(e, _)| e == n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics no binary exports: {unknown:?}"
        );
    }
    // The test can fail: a misspelt name is caught.
    assert!(!exported.contains("twitterstream_operator_stream_lag"));
}

// ------------------------------------------------- every page: YAML blocks

/// The marker, on the line before a ```yaml fence, of a block that shows an
/// error: the apiserver must refuse it (with the message a `# refused: <message>`
/// comment in the block gives, if any).
const INVALID_MARKER: &str = "<!-- docs-test: invalid -->";
/// The marker of a ```yaml block that is not a Kubernetes object (a values
/// file, a fragment): only parsed.
const FRAGMENT_MARKER: &str = "<!-- docs-test: fragment -->";

/// One YAML document of a ```yaml block.
#[derive(Debug)]
struct YamlDoc {
    file: String,
    /// 1-based line of the document's first line in `file`.
    line: usize,
    text: String,
    invalid: bool,
    fragment: bool,
}

impl YamlDoc {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A line that closes a fenced block: backticks only (an info string opens one).
fn is_closing_fence(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 3 && t.chars().all(|c| c == '`')
}

/// The documents of every ```yaml (or ```yml) block of a Markdown text, each
/// with the line it starts on and the marker on the line before its fence.
fn yaml_docs(file: &str, text: &str) -> Vec<YamlDoc> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        let lang = fence.strip_prefix("```").map(str::trim);
        if !matches!(lang, Some("yaml") | Some("yml")) {
            // Skip other fenced blocks whole: a ```yaml inside one is text.
            if fence.starts_with("```") {
                i += 1;
                while i < lines.len() && !is_closing_fence(lines[i]) {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        let marker = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim())
            .unwrap_or("");
        let indent = lines[i].len() - fence.len();
        let (invalid, fragment) = (marker == INVALID_MARKER, marker == FRAGMENT_MARKER);
        let mut doc = String::new();
        let mut doc_line = i + 2;
        i += 1;
        while i < lines.len() && !is_closing_fence(lines[i]) {
            // Blocks indented under a list item carry the item's indent.
            let line = lines[i].get(indent.min(lines[i].len())..).unwrap_or("");
            if line.trim_end() == "---" {
                out.push(YamlDoc {
                    file: file.to_string(),
                    line: doc_line,
                    text: std::mem::take(&mut doc),
                    invalid,
                    fragment,
                });
                doc_line = i + 2;
            } else {
                doc.push_str(line);
                doc.push('\n');
            }
            i += 1;
        }
        out.push(YamlDoc {
            file: file.to_string(),
            line: doc_line,
            text: doc,
            invalid,
            fragment,
        });
        i += 1;
    }
    out.retain(|d| {
        d.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    out
}

#[test]
fn yaml_blocks_are_found_with_their_lines_and_markers() {
    let text = "# t\n\n```yaml\napiVersion: v1\nkind: A\n---\nkind: B\n```\n\n<!-- docs-test: invalid -->\n\n```yaml\nkind: C\n```\n```sh\n```yaml\n```\n  ```yml\n  kind: D\n  ```\n";
    let docs = yaml_docs("x.md", text);
    let got: Vec<(usize, &str, bool)> = docs
        .iter()
        .map(|d| (d.line, d.text.trim(), d.invalid))
        .collect();
    assert_eq!(
        got,
        [
            (4, "apiVersion: v1\nkind: A", false),
            (7, "kind: B", false),
            (13, "kind: C", true),
            (19, "kind: D", false)
        ]
    );
}

/// The CRD as the apiserver gets it (crds/).
fn crd_yaml() -> serde_json::Value {
    let text = read("crds/twitterstream.io_twitterstreams.yaml");
    serde_yaml::from_str(&text).expect("the CRD is YAML")
}

/// The CRD's storage version (else its first).
fn storage_version(crd: &serde_json::Value) -> &serde_json::Value {
    let versions = crd["spec"]["versions"].as_array().expect("CRD versions");
    versions
        .iter()
        .find(|v| v["storage"] == true)
        .unwrap_or(&versions[0])
}

/// The storage version's openAPIV3Schema.
fn crd_schema(crd: &serde_json::Value) -> serde_json::Value {
    storage_version(crd)["schema"]["openAPIV3Schema"].clone()
}

/// What a field's schema says about a value; collects what it does not allow
/// (unknown fields, wrong types, values outside an enum, missing required
/// fields). CEL rules and formats are the apiserver's.
fn schema_errors(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    path: &str,
    errors: &mut Vec<String>,
) {
    use serde_json::Value;
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{path}: must be an integer or a string"));
        }
        return;
    }
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(map) = value.as_object() else {
                errors.push(format!("{path}: must be an object"));
                return;
            };
            for req in schema["required"].as_array().into_iter().flatten() {
                if let Some(r) = req.as_str()
                    && !map.contains_key(r)
                {
                    errors.push(format!("{path}.{r}: required"));
                }
            }
            for (k, v) in map {
                let sub = format!("{path}.{k}");
                if let Some(s) = schema["properties"].get(k) {
                    schema_errors(v, s, &sub, errors);
                } else if schema["additionalProperties"].is_object() {
                    schema_errors(v, &schema["additionalProperties"], &sub, errors);
                } else if schema["properties"].is_object()
                    || schema["additionalProperties"] == false
                {
                    errors.push(format!("{sub}: unknown field"));
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, v) in items.iter().enumerate() {
                    schema_errors(v, &schema["items"], &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{path}: must be a list")),
        },
        Some("string") => match value {
            Value::String(s) => {
                if let Some(allowed) = schema["enum"].as_array()
                    && !allowed.iter().any(|a| a.as_str() == Some(s))
                {
                    errors.push(format!("{path}: {s:?} is not one of {allowed:?}"));
                }
            }
            _ => errors.push(format!("{path}: must be a string")),
        },
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            errors.push(format!("{path}: must be an integer"))
        }
        Some("number") if !value.is_number() => errors.push(format!("{path}: must be a number")),
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{path}: must be true or false"))
        }
        _ => {}
    }
}

/// What the CRD's CEL rule on `spec.*.env` refuses: names starting with a
/// prefix, and a list of names. Read from the rule itself, so this test
/// follows the CRD.
#[derive(Debug)]
struct EnvRule {
    prefix: String,
    names: Vec<String>,
}

impl EnvRule {
    fn from_crd(crd: &serde_json::Value) -> Self {
        let schema = crd_schema(crd);
        let mut rules = Vec::new();
        for component in ["producer", "consumer"] {
            let env = &schema["properties"]["spec"]["properties"][component]["properties"]["env"];
            for v in env["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
            {
                rules.push(v["rule"].as_str().unwrap_or_default().to_string());
            }
        }
        assert_eq!(
            rules.len(),
            2,
            "one CEL rule on each of spec.producer.env and spec.consumer.env: {rules:?}"
        );
        assert_eq!(rules[0], rules[1], "the two env rules differ");
        let rule = &rules[0];
        // self.all(k, !k.startsWith('TWS_') && !(k in ['X_A', 'X_B']))
        let prefix = rule
            .split("startsWith('")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap_or_else(|| panic!("the env rule changed shape, teach this test: {rule}"));
        let list = rule
            .split("in [")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .unwrap_or_else(|| panic!("the env rule changed shape, teach this test: {rule}"));
        let names = list
            .split(',')
            .map(|n| n.trim().trim_matches('\'').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        Self {
            prefix: prefix.to_string(),
            names,
        }
    }

    fn refuses(&self, key: &str) -> bool {
        key.starts_with(&self.prefix) || self.names.iter().any(|n| n == key)
    }
}

/// What a page's YAML objects break offline: the CRD's schema for
/// TwitterStreams, and the env rule (which is CEL, so the schema walk does not
/// see it).
fn offline_errors(
    obj: &serde_json::Value,
    schema: &serde_json::Value,
    env: &EnvRule,
) -> Vec<String> {
    let mut errors = Vec::new();
    if obj["kind"] != "TwitterStream" {
        return errors;
    }
    let mut body = obj.clone();
    // These are every object's, checked by the apiserver.
    if let Some(m) = body.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata"] {
            m.remove(k);
        }
    }
    schema_errors(&body, schema, "", &mut errors);
    for component in ["producer", "consumer"] {
        for key in obj["spec"][component]["env"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if env.refuses(key) {
                errors.push(format!(
                    ".spec.{component}.env.{key}: the CRD refuses it (names starting with {} and {:?})",
                    env.prefix, env.names
                ));
            }
        }
    }
    errors
}

/// Kinds without a namespace (the dry run gives every other object the
/// test's namespace).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
];

fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing to kubectl");
    }
    let out = child.wait_with_output().expect("kubectl ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

/// A namespace for the dry runs, deleted (without waiting) when dropped.
struct DryRunNamespace(String);

impl DryRunNamespace {
    fn create() -> Self {
        let name = twitterstream_tests::unique_name("docs");
        let (ok, out) = kubectl(&["create", "namespace", &name], None);
        assert!(ok, "creating namespace {name}: {out}");
        let (ok, out) = kubectl(
            &["label", "namespace", &name, "twitterstream.io/test=true"],
            None,
        );
        assert!(ok, "labelling namespace {name}: {out}");
        Self(name)
    }
}

impl Drop for DryRunNamespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"], None);
    }
}

/// Installs (or updates) the CRD from crds/ and waits until it is served.
fn install_crd() {
    let crds = root().join("crds");
    let (ok, out) = kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=twitterstream-docs-test",
            "-f",
            &crds.display().to_string(),
        ],
        None,
    );
    assert!(ok, "applying crds/: {out}");
    let (ok, out) = kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd/twitterstreams.twitterstream.io",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "waiting for the CRD: {out}");
}

/// Every ```yaml block of README.md and docs/*.md: each document parses; a
/// Kubernetes object (apiVersion and kind) is checked against the CRD's
/// schema and env rule offline and, with `KUBECONFIG` set, by a server-side
/// dry run in a namespace of its own. A block marked invalid must be refused.
/// Prints every block checked (`--nocapture`).
#[test]
fn yaml_objects_in_the_docs_are_accepted_by_the_crd() {
    let crd = crd_yaml();
    let schema = crd_schema(&crd);
    let env = EnvRule::from_crd(&crd);
    let live = std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty());
    let namespace = live.then(|| {
        install_crd();
        DryRunNamespace::create()
    });
    let mut errors = Vec::new();
    let mut checked = 0;
    for (file, text) in pages() {
        for doc in yaml_docs(&file, &text) {
            let value: serde_json::Value = match serde_yaml::from_str(&doc.text) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(format!("{}: not YAML: {e}", doc.at()));
                    continue;
                }
            };
            let (api_version, kind) = (value["apiVersion"].as_str(), value["kind"].as_str());
            let (Some(api_version), Some(kind)) = (api_version, kind) else {
                if !doc.fragment {
                    errors.push(format!(
                        "{}: a ```yaml block without apiVersion and kind; mark it `{FRAGMENT_MARKER}` if it is not meant to be an object",
                        doc.at()
                    ));
                }
                continue;
            };
            let name = value["metadata"]["name"].as_str().unwrap_or("(no name)");
            let mut problems = offline_errors(&value, &schema, &env);
            let mut verdict = if kind == "TwitterStream" {
                "schema and env rule offline"
            } else {
                "parsed"
            }
            .to_string();
            if let Some(ns) = &namespace {
                let mut obj = value.clone();
                let namespaced = !CLUSTER_SCOPED.contains(&kind);
                if namespaced {
                    obj["metadata"]["namespace"] = ns.0.clone().into();
                }
                let yaml = serde_yaml::to_string(&obj).expect("an object serialises");
                let mut args = vec!["apply", "--dry-run=server", "-o", "name", "-f", "-"];
                if namespaced {
                    args.extend(["-n", ns.0.as_str()]);
                }
                let (accepted, out) = kubectl(&args, Some(&yaml));
                match (accepted, doc.invalid) {
                    (true, false) => verdict.push_str("; dry run accepted"),
                    (false, true) => {
                        // `# refused: <message>` in the block names the rule.
                        if let Some(why) = doc.text.split("# refused: ").nth(1) {
                            let why = why.lines().next().unwrap_or("").trim();
                            if !out.contains(why) {
                                problems.push(format!("refused, but not for {why:?}: {out}"));
                            }
                        }
                        verdict.push_str("; dry run refused, as marked");
                        // The refusal is the point: the offline findings are expected too.
                        problems.retain(|p| p.starts_with("refused, but"));
                    }
                    (true, true) => problems.push(format!(
                        "marked `{INVALID_MARKER}` but the apiserver accepted it"
                    )),
                    (false, false) => problems.push(format!("the apiserver refused it: {out}")),
                }
            } else if doc.invalid {
                if problems.is_empty() {
                    verdict
                        .push_str("; marked invalid, refused only by the apiserver (not checked)");
                } else {
                    problems.clear();
                    verdict.push_str("; refused offline, as marked");
                }
            }
            checked += 1;
            println!("{} {api_version} {kind}/{name}: {verdict}", doc.at());
            for p in problems {
                errors.push(format!("{} {kind}/{name}: {p}", doc.at()));
            }
        }
    }
    if !live {
        println!(
            "KUBECONFIG is not set: no server-side dry runs (the test environment runs them); \
             TwitterStreams were checked offline against the CRD's schema and env rule only"
        );
    }
    println!("{checked} YAML objects checked");
    assert!(checked >= 6, "only {checked} YAML objects in the docs");
    assert!(
        errors.is_empty(),
        "YAML blocks of the docs:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_offline_check_catches_unknown_fields_and_refused_env() {
    let crd = crd_yaml();
    let (schema, env) = (crd_schema(&crd), EnvRule::from_crd(&crd));
    assert!(
        env.refuses("TWS_THREADS") && env.refuses("X_BEARER_TOKEN") && !env.refuses("RUST_LOG")
    );
    let doc = |spec: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "twitterstream.io/v1alpha1", "kind": "TwitterStream",
            "metadata": {"name": "x"}, "spec": spec,
        })
    };
    let good = doc(serde_json::json!({
        "keyword": "k", "source": "synthetic",
        "kafka": {"brokers": ["kafka:9092"], "topic": "t"},
        "consumer": {"env": {"RUST_LOG": "debug"}, "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}},
        "podTemplate": {"tolerations": [{"key": "k", "operator": "Exists"}]},
    }));
    assert_eq!(offline_errors(&good, &schema, &env), Vec::<String>::new());
    let bad = doc(serde_json::json!({
        "keyword": "k", "source": "twitter",
        "kafka": {"brokers": ["kafka:9092"]},
        "consumer": {"env": {"TWS_THREADS": "4"}, "threads": 4},
        "window": {"seconds": "ten"},
    }));
    let errors = offline_errors(&bad, &schema, &env);
    for want in [
        ".spec.source: \"twitter\"",
        ".spec.kafka.topic: required",
        ".spec.consumer.threads: unknown field",
        ".spec.window.seconds: must be an integer",
        ".spec.consumer.env.TWS_THREADS: the CRD refuses it",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{want} not in {errors:#?}"
        );
    }
}

// ------------------------------------------------- every page: prose

/// The words of a text that name this project's metrics (or a prefix of them,
/// when followed by `*`) or kube-state-metrics'.
fn metric_words(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let is_word =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':';
        if is_word(chars[i])
            && (i == 0 || !(is_word(chars[i - 1]) || chars[i - 1].is_ascii_alphanumeric()))
        {
            let start = i;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            // A word glued to more letters (uppercase, '-', '.') is a name of
            // another kind, e.g. a crate or a path.
            let glued = chars
                .get(i)
                .is_some_and(|c| c.is_ascii_uppercase() || *c == '-');
            let word: String = chars[start..i].iter().collect();
            let ours = [
                "twitterstream_operator_",
                "twitterstream_producer_",
                "twitterstream_consumer_",
            ]
            .iter()
            .any(|p| word.starts_with(p));
            if (ours || word.starts_with("kube_")) && !glued {
                out.push((word, chars.get(i) == Some(&'*')));
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_docs_name_only_exported_metrics() {
    let exported = exported_samples();
    let families = exported_families();
    let mut unknown = Vec::new();
    let mut seen = 0;
    for (file, text) in pages() {
        for (n, line) in text.lines().enumerate() {
            for (word, prefix) in metric_words(line) {
                seen += 1;
                let ok = if prefix {
                    families.iter().any(|f| f.starts_with(&word))
                } else {
                    exported.contains(&word)
                        || families.contains(&word)
                        || EXTERNAL_METRICS.iter().any(|(e, _)| *e == word)
                };
                if !ok {
                    unknown.push(format!(
                        "{file}:{}: {word}{}",
                        n + 1,
                        if prefix { "*" } else { "" }
                    ));
                }
            }
        }
    }
    assert!(seen >= 40, "only {seen} metric names in the docs");
    assert!(
        unknown.is_empty(),
        "metric names the binaries do not export (or that the generated list in {METRICS_PAGE} lacks): {unknown:#?}"
    );
}

#[test]
fn metric_words_are_found() {
    let got = metric_words(
        "`twitterstream_consumer_lag` and twitterstream_operator_stream_*{namespace} but not \
         twitterstream_operator=debug, twitterstream.io, kube_pod_x",
    );
    assert_eq!(
        got,
        [
            ("twitterstream_consumer_lag".to_string(), false),
            ("twitterstream_operator_stream_".to_string(), true),
            ("kube_pod_x".to_string(), false)
        ]
    );
}

/// Sentences of a page (fenced blocks left out) that tell users to put a
/// variable the CRD refuses into `spec.producer.env` or `spec.consumer.env`.
fn refused_env_advice(text: &str, env: &EnvRule) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in prose(text).split("\n\n") {
        let paragraph = paragraph.replace('\n', " ");
        for sentence in paragraph.split(". ") {
            let names_env = [
                "spec.consumer.env",
                "spec.producer.env",
                "spec.*.env",
                "`env`",
            ]
            .iter()
            .any(|e| sentence.contains(e));
            if !names_env {
                continue;
            }
            let negated = ["not ", "cannot", "reject", "refuse", "may not", "no field"]
                .iter()
                .any(|n| sentence.contains(n));
            for word in sentence
                .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            {
                let variable = word.len() > env.prefix.len() && !word.ends_with('_');
                if variable && env.refuses(word) && !negated {
                    out.push(format!("{word}: {}", sentence.trim()));
                }
            }
        }
    }
    out
}

#[test]
fn no_page_tells_users_to_set_a_variable_the_crd_refuses() {
    let env = EnvRule::from_crd(&crd_yaml());
    let mut errors = Vec::new();
    for (file, text) in pages() {
        for e in refused_env_advice(&text, &env) {
            errors.push(format!("{file}: {e}"));
        }
    }
    assert!(
        errors.is_empty(),
        "the CRD's CEL rule refuses these in spec.*.env (names starting with {} and {:?}); name a field the CRD \
         has, or stop naming them: {errors:#?}",
        env.prefix,
        env.names
    );
    // The check can fail.
    let advice = "Set `TWS_THREADS` in `spec.consumer.env` to change it.\n\n\
                  `spec.*.env` may not set `TWS_*` or `TWS_TIME`.\n\n`RUST_LOG` in `spec.consumer.env` works.";
    assert_eq!(refused_env_advice(advice, &env).len(), 1);
}

/// The header `kubectl get twitterstreams` prints: NAME, then the CRD's
/// printer columns, upper-cased.
fn printer_header(crd: &serde_json::Value) -> Vec<String> {
    let v = storage_version(crd);
    let mut out = vec!["NAME".to_string()];
    for c in v["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if c["priority"].as_i64().unwrap_or(0) == 0 {
            out.push(c["name"].as_str().unwrap_or_default().to_uppercase());
        }
    }
    out
}

#[test]
fn kubectl_get_headers_in_the_docs_are_the_crds_columns() {
    let want = printer_header(&crd_yaml());
    let want_words: Vec<&str> = want.iter().flat_map(|c| c.split_whitespace()).collect();
    let mut found = 0;
    let mut errors = Vec::new();
    for (file, text) in pages() {
        for (n, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"NAME") && words.contains(&"KEYWORD") {
                found += 1;
                if words != want_words {
                    errors.push(format!("{file}:{}: {line}", n + 1));
                }
            }
            // A column list in prose, e.g. "(columns KEYWORD, TOPIC, ...)".
            if line.contains("columns KEYWORD") || line.contains("# KEYWORD") {
                errors.push(format!(
                    "{file}:{}: lists columns in prose; show the header line instead: {line}",
                    n + 1
                ));
            }
        }
    }
    assert!(found >= 1, "no `kubectl get tws` header in the docs");
    assert!(
        errors.is_empty(),
        "`kubectl get tws` prints {}: {errors:#?}",
        want.join("  ")
    );
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and
/// `_` dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown text's headings (outside fenced blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .into_iter()
        .filter(|(_, l)| l.starts_with('#'))
        .map(|(_, l)| anchor(l.trim_start_matches('#')))
        .collect()
}

/// Relative Markdown links `](target)` of a text, outside fenced blocks.
fn relative_links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        for part in line.split("](").skip(1) {
            let target = part.split(')').next().unwrap_or("");
            if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
                out.push((n, target.to_string()));
            }
        }
    }
    out
}

#[test]
fn links_between_the_pages_lead_somewhere() {
    let pages = pages();
    let mut extra = Vec::new();
    for f in ["CHANGELOG.md", "SECURITY.md"] {
        extra.push((f.to_string(), read(f)));
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for (file, text) in pages.iter().chain(&extra) {
        let dir = Path::new(file).parent().unwrap_or(Path::new(""));
        for (line, target) in relative_links(text) {
            checked += 1;
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() {
                PathBuf::from(file)
            } else {
                dir.join(path)
            };
            let full = root().join(&resolved);
            if !full.exists() {
                broken.push(format!(
                    "{file}:{line}: {target}: no {}",
                    resolved.display()
                ));
                continue;
            }
            if !fragment.is_empty() {
                let linked = std::fs::read_to_string(&full).unwrap_or_default();
                if !anchors(&linked).contains(fragment) {
                    broken.push(format!("{file}:{line}: {target}: no heading #{fragment}"));
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} relative links");
    assert!(broken.is_empty(), "broken links: {broken:#?}");
    assert_eq!(
        anchor("What a user of a `TwitterStream` may do"),
        "what-a-user-of-a-twitterstream-may-do"
    );
}
