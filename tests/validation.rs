//! Invalid TwitterStreams are rejected at admission by the real apiserver,
//! through the CRD's OpenAPI constraints and CEL rules, each with a message
//! that says what to fix.

use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use twitterstream_tests::examples::superbowl_spec;
use twitterstream_tests::k8s::{TestNamespace, admin_client};
use twitterstream_tests::operator::install_crd;

fn valid() -> Value {
    json!({
        "apiVersion": "twitterstream.io/v1alpha1",
        "kind": "TwitterStream",
        "metadata": { "name": "superbowl" },
        "spec": superbowl_spec(
            &["kafka-0.kafka:9092", "kafka-1.kafka:9092", "kafka-2.kafka:9092"],
            "raw-twitter",
        ),
    })
}

/// Sets `value` at a JSON pointer under `spec` (null removes the field).
fn with(pointer: &str, value: Value) -> Value {
    let mut obj = valid();
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let target = obj
        .pointer_mut(&format!("/spec{parent}"))
        .unwrap_or_else(|| panic!("no parent for {pointer}"))
        .as_object_mut()
        .expect("parent is an object");
    if value.is_null() {
        target.remove(key);
    } else {
        target.insert(key.to_string(), value);
    }
    obj
}

async fn create(api: &Api<DynamicObject>, obj: &Value) -> Result<(), String> {
    let obj: DynamicObject = serde_json::from_value(obj.clone()).expect("object");
    // A server-side dry run goes through the whole admission chain (schema,
    // CEL) without storing anything.
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&pp, &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "rejection is an Invalid (422): {s:?}");
            Err(s.message)
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn invalid_resources_are_rejected_with_clear_messages() {
    let client = admin_client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "validation").await;
    let gvk = GroupVersionKind::gvk("twitterstream.io", "v1alpha1", "TwitterStream");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));

    // The README's example is valid: the rules reject what they should and no more.
    create(&api, &valid()).await.expect("the example is valid");
    create(&api, &with("/source", json!("synthetic")))
        .await
        .expect("synthetic needs no credentials");
    create(
        &api,
        &with("/producer/env", json!({"RUST_LOG": "debug", "TZ": "UTC"})),
    )
    .await
    .expect("other variables are the user's");
    create(
        &api,
        &with(
            "/kafka/sasl",
            json!({"mechanism": "OAUTHBEARER", "secret": "oauth-client", "usernameKey": "clientId",
                   "passwordKey": "clientSecret",
                   "oauth": {"tokenEndpoint": "https://idp.example/realms/kafka/token", "scope": "kafka",
                             "ca": {"configMap": "idp-ca", "key": "ca.crt"}}}),
        ),
    )
    .await
    .expect("OAUTHBEARER with a token endpoint is valid");

    let long_topic = "t".repeat(250);
    // A 63-character name (a label value's most) and quantities of every
    // form are accepted; one character more, or a quantity that is none,
    // is not (both were accepted, and only the Deployments refused).
    let mut name_63 = valid();
    name_63["metadata"]["name"] = json!("n".repeat(63));
    create(&api, &name_63)
        .await
        .expect("a 63-character name fits");
    let mut long_name = valid();
    long_name["metadata"]["name"] = json!("n".repeat(64));
    create(
        &api,
        &with(
            "/consumer/resources",
            json!({"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": 2, "memory": "1.5Gi"}}),
        ),
    )
    .await
    .expect("quantities as strings and numbers are valid");
    let mut no_secret = with("/credentialsSecret", Value::Null);
    no_secret["spec"]["source"] = json!("x-stream");
    let mut end_before_start = valid();
    end_before_start["spec"]["endTime"] = json!("2019-12-31T00:00:00Z");
    let mut same_time = valid();
    same_time["spec"]["endTime"] = same_time["spec"]["startTime"].clone();
    // The longest keyword that still fits X's 512 characters with ' lang:en'
    // and ' -is:retweet' (and parentheses) is accepted.
    create(&api, &with("/keyword", json!("k".repeat(490))))
        .await
        .expect("a 490-character keyword fits");
    // Autoscaling up to every partition, with the defaults filled in.
    let autoscaled = with("/consumer/autoscaling", json!({"maxReplicas": 3}));
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let created = api
        .create(
            &dry_run,
            &serde_json::from_value(autoscaled).expect("object"),
        )
        .await
        .expect("autoscaling up to kafka.partitions is valid");
    assert_eq!(
        created.data["spec"]["consumer"]["autoscaling"],
        json!({"minReplicas": 1, "maxReplicas": 3, "catchUpSeconds": 60,
               "targetUtilizationPercent": 80, "scaleDownStabilizationSeconds": 300,
               "scaleUpCooldownSeconds": 30}),
        "the schema's defaults"
    );
    let mut tiny_rate = with("/synthetic", json!({"rate": 1e-9}));
    tiny_rate["spec"]["source"] = json!("synthetic");
    let mut tiny_speed = with("/replay", json!({"configMap": "tweets", "speed": 1e-9}));
    tiny_speed["spec"]["source"] = json!("replay");
    let mut two_synthetic_producers = with("/producer/replicas", json!(2));
    two_synthetic_producers["spec"]["source"] = json!("synthetic");
    let mut output_is_input = valid();
    output_is_input["spec"]["kafka"]["outputTopic"] = json!("raw-twitter");

    let cases: Vec<(&str, Value, &str)> = vec![
        ("empty keyword", with("/keyword", json!("")), "spec.keyword"),
        (
            "blank keyword",
            with("/keyword", json!("   ")),
            "keyword must not be blank",
        ),
        (
            "oversized keyword",
            with("/keyword", json!("k".repeat(513))),
            "spec.keyword",
        ),
        (
            "no brokers",
            with("/kafka/brokers", json!([])),
            "spec.kafka.brokers",
        ),
        (
            "broker without port",
            with("/kafka/brokers", json!(["kafka-0.kafka"])),
            "each kafka.brokers entry must be host:port",
        ),
        (
            "broker with a bad port",
            with("/kafka/brokers", json!(["kafka-0.kafka:ninety"])),
            "each kafka.brokers entry must be host:port",
        ),
        (
            "topic with illegal characters",
            with("/kafka/topic", json!("raw twitter!")),
            "kafka.topic may contain only ASCII letters, digits",
        ),
        (
            "topic '.'",
            with("/kafka/topic", json!(".")),
            "kafka.topic cannot be '.' or '..'",
        ),
        (
            "topic '..'",
            with("/kafka/topic", json!("..")),
            "kafka.topic cannot be '.' or '..'",
        ),
        (
            "topic too long",
            with("/kafka/topic", json!(long_topic)),
            "spec.kafka.topic",
        ),
        (
            "window of 0 s",
            with("/window/seconds", json!(0)),
            "spec.window.seconds",
        ),
        (
            "window over a day",
            with("/window/seconds", json!(86401)),
            "spec.window.seconds",
        ),
        (
            "slide longer than window",
            with("/window/slideSeconds", json!(20)),
            "window.slideSeconds must not exceed window.seconds",
        ),
        (
            "slide not dividing window",
            with("/window/slideSeconds", json!(3)),
            "window.slideSeconds must divide window.seconds",
        ),
        (
            "negative lateness",
            with("/window/allowedLatenessSeconds", json!(-1)),
            "spec.window.allowedLatenessSeconds",
        ),
        (
            "endTime before startTime",
            end_before_start,
            "endTime must be after startTime",
        ),
        (
            "endTime equal to startTime",
            same_time,
            "endTime must be after startTime",
        ),
        (
            "lookbackSeconds beside startTime",
            with("/lookbackSeconds", json!(60)),
            "lookbackSeconds and startTime exclude each other",
        ),
        (
            "negative lookbackSeconds",
            with("/lookbackSeconds", json!(-1)),
            "spec.lookbackSeconds",
        ),
        (
            "query over X's limit",
            with("/keyword", json!("k".repeat(495))),
            "keyword is too long",
        ),
        (
            "a day sliding every second",
            with("/window", json!({"seconds": 86400, "slideSeconds": 1})),
            "must be at most 60",
        ),
        (
            "a synthetic rate that is almost 0",
            tiny_rate,
            "synthetic.rate must be 0",
        ),
        (
            "a replay speed that is almost 0",
            tiny_speed,
            "replay.speed must be 0",
        ),
        (
            "two search producers",
            with("/producer/replicas", json!(2)),
            "producer.replicas must be 0 or 1",
        ),
        (
            // Same transactional id: the second fenced the first.
            "two synthetic producers",
            two_synthetic_producers,
            "producer.replicas must be 0 or 1",
        ),
        (
            "stream without credentials",
            no_secret,
            "need credentialsSecret",
        ),
        (
            "more consumers than partitions",
            with("/consumer/replicas", json!(4)),
            "consumer.replicas must not exceed kafka.partitions",
        ),
        (
            "autoscaling past the partitions",
            with("/consumer/autoscaling", json!({"maxReplicas": 4})),
            "consumer.autoscaling.maxReplicas must not exceed kafka.partitions",
        ),
        (
            "autoscaling with min above max",
            with(
                "/consumer/autoscaling",
                json!({"minReplicas": 3, "maxReplicas": 2}),
            ),
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            "autoscaling to a utilization of 0",
            with(
                "/consumer/autoscaling",
                json!({"maxReplicas": 2, "targetUtilizationPercent": 0}),
            ),
            "targetUtilizationPercent",
        ),
        (
            "a PostgreSQL table name that would need quoting",
            with(
                "/sink",
                json!({"postgres": {"secretName": "pg", "table": "Tweet-Windows"}}),
            ),
            "spec.sink.postgres.table",
        ),
        (
            "a PostgreSQL sink without its Secret",
            with("/sink", json!({"postgres": {"schema": "analytics"}})),
            "secretName",
        ),
        (
            "an unknown PostgreSQL sslMode",
            with(
                "/sink",
                json!({"postgres": {"secretName": "pg", "sslMode": "allow"}}),
            ),
            "spec.sink.postgres.sslMode",
        ),
        (
            "output topic equal to topic",
            output_is_input,
            "kafka.outputTopic must differ from kafka.topic",
        ),
        (
            "negative consumer replicas",
            with("/consumer/replicas", json!(-1)),
            "spec.consumer.replicas",
        ),
        (
            "negative partitions",
            with("/kafka/partitions", json!(-3)),
            "spec.kafka.partitions",
        ),
        (
            "zero replication factor",
            with("/kafka/replicationFactor", json!(0)),
            "spec.kafka.replicationFactor",
        ),
        (
            "bad language",
            with("/language", json!("english")),
            "language must be a BCP 47 language code",
        ),
        (
            "unknown source",
            with("/source", json!("firehose")),
            "spec.source",
        ),
        ("missing kafka", with("/kafka", Value::Null), "spec.kafka"),
        (
            "bad credentials Secret name",
            with("/credentialsSecret", json!("X_API")),
            "credentialsSecret must be a Secret name",
        ),
        (
            "negative minFaves",
            with("/minFaves", json!(-5)),
            "spec.minFaves",
        ),
        (
            "poll interval 0",
            with("/pollIntervalSeconds", json!(0)),
            "spec.pollIntervalSeconds",
        ),
        (
            "a CA named in both a Secret and a ConfigMap",
            with(
                "/kafka/tls",
                json!({"ca": {"secret": "a", "configMap": "b", "key": "ca.crt"}}),
            ),
            "name exactly one of secret and configMap",
        ),
        (
            "SASL with neither username nor usernameKey",
            with(
                "/kafka/sasl",
                json!({"mechanism": "SCRAM-SHA-512", "secret": "user"}),
            ),
            "sasl needs exactly one of username and usernameKey",
        ),
        (
            "SASL OAUTHBEARER without a token endpoint",
            with(
                "/kafka/sasl",
                json!({"mechanism": "OAUTHBEARER", "secret": "oauth", "username": "app"}),
            ),
            "sasl.oauth is needed with mechanism OAUTHBEARER",
        ),
        (
            "a token endpoint with SCRAM",
            with(
                "/kafka/sasl",
                json!({"mechanism": "SCRAM-SHA-512", "secret": "user", "username": "app",
                       "oauth": {"tokenEndpoint": "https://idp.example/token"}}),
            ),
            "sasl.oauth is needed with mechanism OAUTHBEARER",
        ),
        (
            "a token endpoint that is not an http(s) URL",
            with(
                "/kafka/sasl",
                json!({"mechanism": "OAUTHBEARER", "secret": "oauth", "username": "app",
                       "oauth": {"tokenEndpoint": "file:///etc/passwd"}}),
            ),
            "spec.kafka.sasl.oauth.tokenEndpoint",
        ),
        // Tenant safety: a resource cannot set the workers' own variables,
        // e.g. send the stream's bearer token to a host of its choosing.
        (
            "producer env redirecting the X API",
            with(
                "/producer/env",
                json!({"TWS_X_API_BASE_URL": "https://collector.example"}),
            ),
            "env must not set the workers' own variables",
        ),
        (
            "consumer env overriding a flag",
            with("/consumer/env", json!({"TWS_OUTPUT_TOPIC": "elsewhere"})),
            "env must not set the workers' own variables",
        ),
        (
            "producer env supplying X credentials",
            with("/producer/env", json!({"X_BEARER_TOKEN": "AAAA"})),
            "env must not set the workers' own variables",
        ),
        (
            "a memory limit that is no quantity",
            with("/consumer/resources", json!({"limits": {"memory": "lots"}})),
            "every resources request and limit must be a Kubernetes quantity",
        ),
        (
            "a CPU request that is no quantity",
            with(
                "/producer/resources",
                json!({"requests": {"cpu": "1.5 cores"}}),
            ),
            "every resources request and limit must be a Kubernetes quantity",
        ),
        (
            "a name longer than a label value",
            long_name,
            "metadata.name must be at most 63 characters",
        ),
    ];
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (what, obj, expected) in &cases {
        match create(&api, obj).await {
            Ok(()) => failures.push(format!("{what}: accepted")),
            Err(msg) if msg.contains(expected) => println!("rejected {what}: {msg}"),
            Err(msg) => failures.push(format!("{what}: message {msg:?} lacks {expected:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!(
        "{} invalid TwitterStreams rejected with their messages",
        cases.len()
    );
}
