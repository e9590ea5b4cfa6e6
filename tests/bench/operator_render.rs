//! Renders the inputs of the operator benchmark (tests/bench/operator.sh):
//!
//!   operator-bench-render streams  --count N --brokers B   # N TwitterStreams
//!   operator-bench-render children --count N --brokers B --namespace NS
//!
//! `children` is what the operator would create for those streams, rendered by
//! the operator's own pure functions, minus owner references (the reference
//! run applies them without owners, or the garbage collector would remove them).

use serde_json::json;
use twitterstream_operator::crd::{TwitterStream, TwitterStreamSpec};
use twitterstream_operator::render::{RenderConfig, deployments};

fn stream(i: usize, brokers: &str, namespace: &str) -> TwitterStream {
    let spec: TwitterStreamSpec = serde_json::from_value(json!({
        "keyword": format!("bench keyword {i}"),
        "source": "synthetic",
        "kafka": { "brokers": brokers.split(',').collect::<Vec<_>>(), "topic": format!("bench-{namespace}-{i}"), "partitions": 1 },
        "consumer": { "replicas": 1 }
    }))
    .expect("bench spec");
    let mut t = TwitterStream::new(&format!("bench-{i}"), spec);
    t.metadata.namespace = Some(namespace.to_string());
    t
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: operator-bench-render streams|children --count N --brokers B [--namespace NS]";
    let mode = args.get(1).expect(usage).clone();
    let count: usize = arg(&args, "--count")
        .and_then(|c| c.parse().ok())
        .expect(usage);
    let brokers = arg(&args, "--brokers").expect(usage);
    let namespace = arg(&args, "--namespace").unwrap_or_else(|| "default".into());
    let cfg = RenderConfig::new("ghcr.io/twitterstream-io/twitterstream-workers:bench");
    let mut out = String::new();
    for i in 0..count {
        let t = stream(i, &brokers, &namespace);
        match mode.as_str() {
            "streams" => {
                let mut v = serde_json::to_value(&t).expect("stream JSON");
                v["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove("namespace");
                out.push_str(&serde_yaml::to_string(&v).expect("YAML"));
                out.push_str("---\n");
            }
            "children" => {
                for (_, mut d) in deployments(&t, &cfg) {
                    d.metadata.owner_references = None;
                    d.metadata.namespace = None;
                    let mut v = serde_json::to_value(&d).expect("deployment JSON");
                    v["apiVersion"] = json!("apps/v1");
                    v["kind"] = json!("Deployment");
                    out.push_str(&serde_yaml::to_string(&v).expect("YAML"));
                    out.push_str("---\n");
                }
            }
            _ => panic!("{usage}"),
        }
    }
    print!("{out}");
}
