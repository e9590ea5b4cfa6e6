use super::*;
use crate::crd::{TwitterStream, TwitterStreamSpec};
use twitterstream_contract::consumer::ConsumerArgs;
use twitterstream_contract::producer::ProducerArgs;
use twitterstream_contract::{LogFormat, Source, parse_rendered};

/// The README's example, as the apiserver stores it after defaulting.
fn superbowl() -> TwitterStream {
    let spec: TwitterStreamSpec = serde_yaml::from_str(
        r#"
keyword: superbowl
language: en
startTime: "2020-01-01T00:00:00Z"
endTime: "2020-03-03T00:00:00Z"
minFaves: 60000
source: x-search
pollIntervalSeconds: 10
credentialsSecret: x-api
kafka:
  brokers: ["kafka-0.kafka:9092", "kafka-1.kafka:9092", "kafka-2.kafka:9092"]
  topic: raw-twitter
  partitions: 3
  replicationFactor: 1
  outputTopic: superbowl-windows
window: {seconds: 10, slideSeconds: 10, allowedLatenessSeconds: 5}
producer: {replicas: 1}
consumer: {replicas: 2}
suspend: false
"#,
    )
    .unwrap();
    let mut tws = TwitterStream::new("superbowl", spec);
    tws.metadata.namespace = Some("sports".into());
    tws.metadata.uid = Some("0b7c3b8e-uid".into());
    tws
}

fn cfg() -> RenderConfig {
    RenderConfig::new("registry.example/twitterstream-workers:1.2.3")
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn args(d: &Deployment) -> Vec<String> {
    pod_spec(d).containers[0].args.clone().unwrap()
}

/// The value of `--name=value` in rendered arguments.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn names_namespace_labels_and_owner() {
    let tws = superbowl();
    let [(_, p), (_, c)] = deployments(&tws, &cfg());
    assert_eq!(p.metadata.name.as_deref(), Some("superbowl-producer"));
    assert_eq!(c.metadata.name.as_deref(), Some("superbowl-consumer"));
    for (d, component) in [(&p, "producer"), (&c, "consumer")] {
        assert_eq!(d.metadata.namespace.as_deref(), Some("sports"));
        let labels = d.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "twitterstream");
        assert_eq!(labels["app.kubernetes.io/instance"], "superbowl");
        assert_eq!(labels["app.kubernetes.io/component"], component);
        assert_eq!(
            labels["app.kubernetes.io/managed-by"],
            "twitterstream-operator"
        );
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "TwitterStream");
        assert_eq!(owner.api_version, "twitterstream.io/v1alpha1");
        assert_eq!(owner.uid, "0b7c3b8e-uid");
        assert_eq!(owner.controller, Some(true));
        let spec = d.spec.as_ref().unwrap();
        let selector = spec.selector.match_labels.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in selector {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "pod template carries selector label {k}"
            );
        }
    }
}

#[test]
fn producer_args_follow_the_spec() {
    let tws = superbowl();
    let a = args(&deployment(&tws, Component::Producer, &cfg()));
    let p: ProducerArgs = parse_rendered(&a).unwrap();
    assert_eq!(p.source, Source::XSearch);
    assert_eq!(p.keyword.as_deref(), Some("superbowl"));
    assert_eq!(p.language.as_deref(), Some("en"));
    assert_eq!(
        p.start_time.map(|t| t.to_rfc3339()).as_deref(),
        Some("2020-01-01T00:00:00+00:00")
    );
    assert_eq!(
        p.end_time.map(|t| t.to_rfc3339()).as_deref(),
        Some("2020-03-03T00:00:00+00:00")
    );
    assert_eq!(p.min_faves, Some(60000));
    assert_eq!(p.poll_interval_seconds, 10);
    assert_eq!(
        p.brokers,
        [
            "kafka-0.kafka:9092",
            "kafka-1.kafka:9092",
            "kafka-2.kafka:9092"
        ]
    );
    assert_eq!(p.topic, "raw-twitter");
    assert_eq!(p.credentials_dir, Some(CREDENTIALS_DIR.into()));
    assert_eq!(p.namespace.as_deref(), Some("sports"));
    assert_eq!(p.log_format, LogFormat::Json);
    // Defaults are left out (a TWS_* variable in the pod template can still
    // set them), except the listen address that the container port names.
    assert_eq!(flag(&a, "--poll-interval-seconds"), None);
    assert_eq!(flag(&a, "--x-api-base-url"), None);
    assert_eq!(flag(&a, "--http-addr"), Some("0.0.0.0:8080"));
    assert_eq!(flag(&a, "--min-faves"), Some("60000"));
}

#[test]
fn a_search_begins_its_lookback_back_ten_minutes_unless_told() {
    let mut tws = superbowl();
    tws.spec.start_time = None;
    tws.spec.end_time = None;
    let a = args(&deployment(&tws, Component::Producer, &cfg()));
    let p: ProducerArgs = parse_rendered(&a).unwrap();
    assert_eq!(p.lookback_seconds, 600, "bounded by default");
    assert_eq!(
        flag(&a, "--lookback-seconds"),
        None,
        "the default is left out"
    );
    tws.spec.lookback_seconds = Some(0);
    let a = args(&deployment(&tws, Component::Producer, &cfg()));
    assert_eq!(flag(&a, "--lookback-seconds"), Some("0"));
    assert_eq!(
        parse_rendered::<ProducerArgs>(&a).unwrap().lookback_seconds,
        0
    );
}

#[test]
fn consumer_args_follow_the_spec() {
    let tws = superbowl();
    let a = args(&deployment(&tws, Component::Consumer, &cfg()));
    let c: ConsumerArgs = parse_rendered(&a).unwrap();
    assert_eq!(c.window_seconds, 10);
    assert_eq!(c.slide(), 10);
    assert_eq!(c.allowed_lateness_seconds, 5);
    assert_eq!(c.output_topic.as_deref(), Some("superbowl-windows"));
    assert_eq!(
        c.group_id.as_deref(),
        Some("twitterstream.sports.superbowl.w10s")
    );
    assert_eq!(c.top_n, 10);
    assert_eq!(c.log_format, LogFormat::Json);
}

/// Item 5 of #12: a changed window size or slide is a new group (and so a
/// new partials topic); lateness is not.
#[test]
fn a_window_change_is_a_new_consumer_group() {
    let group = |seconds: i64, slide: Option<i64>, lateness: i64| {
        let mut tws = superbowl();
        tws.spec.window.seconds = seconds;
        tws.spec.window.slide_seconds = slide;
        tws.spec.window.allowed_lateness_seconds = lateness;
        flag(
            &args(&deployment(&tws, Component::Consumer, &cfg())),
            "--group-id",
        )
        .map(str::to_owned)
    };
    assert_eq!(group(10, None, 5), group(10, Some(10), 0));
    assert_ne!(group(10, None, 5), group(30, None, 5));
    assert_ne!(group(60, Some(10), 5), group(60, None, 5));
    assert_ne!(group(60, Some(10), 5), group(60, Some(20), 5));
    assert_eq!(
        group(60, Some(10), 0).as_deref(),
        Some("twitterstream.sports.superbowl.w60s-10s")
    );
}

/// The group's last part and the consumer's output keys name the window
/// shape alike: the operator's name for it is the consumer's.
#[test]
fn the_group_names_the_window_as_the_consumer_does() {
    use twitterstream_workers::consumer::pipeline::window_spec;
    for (seconds, slide) in [
        (10, None),
        (10, Some(10)),
        (60, Some(10)),
        (86400, Some(3600)),
    ] {
        let mut tws = superbowl();
        tws.spec.window.seconds = seconds;
        tws.spec.window.slide_seconds = slide;
        let parsed: ConsumerArgs =
            parse_rendered(&args(&deployment(&tws, Component::Consumer, &cfg()))).unwrap();
        let consumer = window_spec(&parsed).generation();
        assert_eq!(window_generation(&tws.spec.window), consumer);
        assert!(
            parsed
                .group_id
                .as_deref()
                .is_some_and(|g| g.ends_with(&format!(".{consumer}"))),
            "{:?}",
            parsed.group_id
        );
    }
}

#[test]
fn rendered_args_are_accepted_by_the_workers_parsers() {
    let mut tws = superbowl();
    for source in ["x-search", "synthetic", "replay"] {
        tws.spec.source = serde_json::from_value(serde_json::json!(source)).unwrap();
        tws.spec.replay = Some(crate::crd::ReplaySpec {
            config_map: "tweets".into(),
            key: "tweets.jsonl".into(),
            speed: 2.0,
        });
        let [(_, p), (_, c)] = deployments(&tws, &cfg());
        let parsed: ProducerArgs =
            parse_rendered(&args(&p)).unwrap_or_else(|e| panic!("{source}: {e}"));
        parsed.validate().unwrap();
        assert_eq!(parsed.stream_name, "superbowl");
        assert_eq!(parsed.brokers.len(), 3);

        let parsed: ConsumerArgs = parse_rendered(&args(&c)).unwrap_or_else(|e| panic!("{e}"));
        parsed.validate().unwrap();
        assert_eq!(parsed.output_topic.as_deref(), Some("superbowl-windows"));
        assert_eq!(parsed.slide(), 10);
    }
}

#[test]
fn credentials_are_a_read_only_secret_volume_never_env_or_args() {
    let tws = superbowl();
    let p = deployment(&tws, Component::Producer, &cfg());
    let pod = pod_spec(&p);
    let vol = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.secret.is_some())
        .unwrap();
    assert_eq!(
        vol.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("x-api")
    );
    let mount = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == vol.name)
        .unwrap();
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(mount.mount_path, CREDENTIALS_DIR);
    let c = &pod.containers[0];
    assert!(
        c.env
            .as_ref()
            .is_none_or(|e| e.iter().all(|e| e.value_from.is_none()))
    );
    // The consumer never sees the credentials.
    let consumer = deployment(&tws, Component::Consumer, &cfg());
    assert!(pod_spec(&consumer).volumes.is_none());
}

#[test]
fn pods_run_restricted() {
    let tws = superbowl();
    for (_, d) in deployments(&tws, &cfg()) {
        let pod = pod_spec(&d);
        // The workers never talk to the Kubernetes API: no token to steal.
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let c = &pod.containers[0];
        assert!(
            c.resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()
                .contains_key("cpu")
        );
        let live = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        let readiness = c.readiness_probe.as_ref().unwrap();
        // Seen within 2 s of being ready; unready after 16 s of failing.
        assert_eq!(readiness.period_seconds, Some(2));
        assert_eq!(
            readiness.period_seconds.unwrap() * readiness.failure_threshold.unwrap(),
            16
        );
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, HTTP_PORT);
    }
}

#[test]
fn image_defaults_to_config_and_is_overridable() {
    let mut tws = superbowl();
    let p = deployment(&tws, Component::Producer, &cfg());
    assert_eq!(
        pod_spec(&p).containers[0].image.as_deref(),
        Some("registry.example/twitterstream-workers:1.2.3")
    );
    tws.spec.consumer.container.image = Some("mine:dev".into());
    let c = deployment(&tws, Component::Consumer, &cfg());
    assert_eq!(
        pod_spec(&c).containers[0].image.as_deref(),
        Some("mine:dev")
    );
}

#[test]
fn suspend_scales_to_zero_and_a_change_rolls_only_the_pods_it_concerns() {
    let mut tws = superbowl();
    let template = |t: &TwitterStream, c: Component| {
        serde_json::to_value(&deployment(t, c, &cfg()).spec.unwrap().template).unwrap()
    };
    let producer = template(&tws, Component::Producer);
    let consumer = template(&tws, Component::Consumer);
    tws.spec.consumer.replicas = 3;
    assert_eq!(
        template(&tws, Component::Consumer),
        consumer,
        "scaling keeps the pods"
    );
    tws.spec.suspend = true;
    assert_eq!(
        template(&tws, Component::Consumer),
        consumer,
        "suspend keeps the pods"
    );
    for (_, d) in deployments(&tws, &cfg()) {
        assert_eq!(d.spec.unwrap().replicas, Some(0));
    }
    tws.spec.consumer.autoscaling = Some(crate::crd::AutoscalingSpec {
        min_replicas: 1,
        max_replicas: 3,
        catch_up_seconds: 60,
        target_utilization_percent: 80,
        scale_down_stabilization_seconds: 300,
        scale_up_cooldown_seconds: 30,
    });
    assert_eq!(
        template(&tws, Component::Consumer),
        consumer,
        "autoscaling keeps the pods"
    );
    assert_eq!(template(&tws, Component::Producer), producer);
    tws.spec.keyword = "halftime".into();
    assert_ne!(
        template(&tws, Component::Producer),
        producer,
        "the producer searches for something else"
    );
    assert_eq!(
        template(&tws, Component::Consumer),
        consumer,
        "the consumers read the same"
    );
    tws.spec.window.seconds = 60;
    assert_ne!(
        template(&tws, Component::Consumer),
        consumer,
        "other windows"
    );
}

#[test]
fn search_producers_are_replaced_not_surged() {
    let mut tws = superbowl();
    let strategy = |t: &TwitterStream| {
        deployment(t, Component::Producer, &cfg())
            .spec
            .unwrap()
            .strategy
            .unwrap()
            .type_
    };
    assert_eq!(strategy(&tws).as_deref(), Some("Recreate"));
    tws.spec.source = crate::crd::Source::Synthetic;
    assert_eq!(strategy(&tws), None);
}

#[test]
fn render_hash_changes_with_the_object_only() {
    let mut tws = superbowl();
    let [(_, p1), (_, c1)] = deployments(&tws, &cfg());
    let [(_, p2), (_, c2)] = deployments(&tws, &cfg());
    assert_eq!(
        render_hash(&p1),
        render_hash(&p2),
        "rendering is deterministic"
    );
    assert_ne!(render_hash(&p1), render_hash(&c1));
    assert_eq!(render_hash(&c1), render_hash(&c2));
    tws.spec.consumer.replicas = 3;
    let [(_, p3), (_, c3)] = deployments(&tws, &cfg());
    assert_eq!(
        render_hash(&p1),
        render_hash(&p3),
        "the producer did not change"
    );
    assert_ne!(
        render_hash(&c1),
        render_hash(&c3),
        "a replica change is a change to apply"
    );
}

#[test]
fn a_postgres_sink_mounts_its_secret_into_the_consumers_only_and_names_the_table() {
    let mut tws = superbowl();
    tws.spec.sink = Some(serde_json::from_value(serde_json::json!({"postgres": {"secretName": "pg-writer", "schema": "analytics", "table": "tweet_windows"}})).unwrap());
    let [(_, p), (_, c)] = deployments(&tws, &cfg());
    let volume = pod_spec(&c)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "postgres")
        .expect("the Secret's volume");
    assert_eq!(
        volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("pg-writer")
    );
    let mount = pod_spec(&c).containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "postgres")
        .expect("mounted");
    assert_eq!(mount.read_only, Some(true));
    let parsed: ConsumerArgs = parse_rendered(&args(&c)).unwrap();
    parsed.validate().unwrap();
    assert_eq!(
        parsed.postgres.postgres_dir.as_deref(),
        Some(std::path::Path::new(mount.mount_path.as_str()))
    );
    assert_eq!(parsed.postgres.postgres_schema, "analytics");
    assert_eq!(parsed.postgres.postgres_table, "tweet_windows");
    assert_eq!(parsed.stream_namespace, "sports");
    assert!(
        pod_spec(&p)
            .volumes
            .iter()
            .flatten()
            .all(|v| v.name != "postgres"),
        "the producer never sees the database"
    );
}
