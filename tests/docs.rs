//! README.md's checked sections.
//!
//! - The metrics list is generated from the real registries of the operator,
//!   the producer and the consumer: each is built as the binaries build it,
//!   encoded, and its `# HELP` / `# TYPE` lines and sample labels read back.
//!   `TWS_UPDATE_README=1` rewrites the region instead of failing.
//! - The troubleshooting section is hand-written; this test checks that what
//!   it names exists: environment variables, metrics, operator reasons and
//!   quoted log messages.
//!
//! (The TwitterStream reference is checked by the xtask crate's own tests;
//! `cargo xtask docs` rewrites every generated region.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use xtask::readme::{region, replace_region, same_contents};

const REFRESH: &str = "TWS_UPDATE_README=1 cargo test -p twitterstream-tests --test docs";
const METRICS_REGION: &str = "metrics";
const TROUBLESHOOTING_REGION: &str = "troubleshooting";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md exists")
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
        use twitterstream_workers::consumer::metrics::{Metrics, PartitionLabels, StageLabels};
        let m = Metrics::new();
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
        text: "the error's reason, also the Warning Event's: `KafkaUnreachable`, `PartitionsCannotShrink`, `TopicAdminFailed`, `KafkaClientError`, `KubernetesApiError`, `NoNamespace`",
        literals: &[
            "KafkaUnreachable",
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
            // would be missing from the README.
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

#[test]
fn readme_metrics_are_up_to_date() {
    let generated = metrics_markdown();
    let text = readme();
    let current = region(&text, METRICS_REGION).expect("README has the metrics markers");
    if same_contents(current, &generated) {
        return;
    }
    if std::env::var_os("TWS_UPDATE_README").is_some() {
        let updated = replace_region(&text, METRICS_REGION, &generated).expect("markers");
        std::fs::write(root().join("README.md"), updated).expect("README.md is writable");
        eprintln!("rewrote the metrics region of README.md");
        return;
    }
    panic!("README.md's metrics list is stale: run `{REFRESH}`\n\ngenerated:\n{generated}");
}

// -------------------------------------------------------- troubleshooting

/// Inline code spans of a Markdown text (single backticks), outside fenced
/// code blocks.
fn code_spans(text: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            prose.push_str(line);
            prose.push('\n');
        }
    }
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
    let text = readme();
    let section = region(&text, TROUBLESHOOTING_REGION).expect("README has the markers");
    match check_names(section) {
        Ok(checked) => assert!(
            checked >= 30,
            "only {checked} checkable names in the section"
        ),
        Err(errors) => panic!("README.md's troubleshooting section: {errors:#?}"),
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
