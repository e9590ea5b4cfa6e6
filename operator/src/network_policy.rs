//! The NetworkPolicies of a pipeline (`spec.networkPolicy`): one per
//! component, selecting its pods. Egress: DNS, the brokers' ports, and for
//! the producer the X API's port, for the consumer PostgreSQL's (with
//! `spec.sink.postgres`); ingress: the health and metrics port. A
//! NetworkPolicy cannot name a host, so the destinations are any address on
//! those ports unless the spec narrows them with peers.

use crate::crd::{NetworkPolicySpec, TwitterStream};
use crate::render::{
    Component, HTTP_PORT, RenderConfig, child_metadata, deployment_name, selector_labels,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec as PolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeSet;

/// The workers' default X API (`--x-api-base-url` unset).
const X_API_PORT: i32 = 443;

/// `<name>-producer` and `<name>-consumer`, named like the Deployments.
pub(crate) fn policy_names(tws: &TwitterStream) -> [String; 2] {
    [Component::Producer, Component::Consumer].map(|c| deployment_name(tws, c))
}

/// The policies `spec.networkPolicy` asks for; none when it is unset.
pub(crate) fn network_policies(tws: &TwitterStream, cfg: &RenderConfig) -> Vec<NetworkPolicy> {
    let Some(spec) = &tws.spec.network_policy else {
        return Vec::new();
    };
    [Component::Producer, Component::Consumer]
        .map(|c| policy(tws, c, spec, cfg))
        .into()
}

fn policy(
    tws: &TwitterStream,
    component: Component,
    spec: &NetworkPolicySpec,
    cfg: &RenderConfig,
) -> NetworkPolicy {
    let mut egress = vec![
        allow(&[], &[("UDP", 53), ("TCP", 53)]),
        allow(
            &spec.kafka,
            &broker_ports(&tws.spec.kafka.brokers)
                .into_iter()
                .map(|p| ("TCP", p))
                .collect::<Vec<_>>(),
        ),
    ];
    if component == Component::Producer {
        egress.push(allow(&spec.x_api, &[("TCP", x_api_port(cfg))]));
    }
    if component == Component::Consumer
        && let Some(pg) = tws.spec.sink.as_ref().and_then(|s| s.postgres.as_ref())
    {
        egress.push(allow(&[], &[("TCP", pg.network_policy_port)]));
    }
    NetworkPolicy {
        metadata: child_metadata(tws, component),
        spec: Some(PolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(tws, component)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: (!spec.metrics_from.is_empty()).then(|| spec.metrics_from.clone()),
                ports: Some(ports(&[("TCP", HTTP_PORT)])),
            }]),
            egress: Some(egress),
        }),
    }
}

/// Egress to `to` (anywhere when empty) on `ports`.
fn allow(to: &[NetworkPolicyPeer], ports_: &[(&str, i32)]) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: (!to.is_empty()).then(|| to.to_vec()),
        ports: Some(ports(ports_)),
    }
}

fn ports(ports: &[(&str, i32)]) -> Vec<NetworkPolicyPort> {
    ports
        .iter()
        .map(|(protocol, port)| NetworkPolicyPort {
            protocol: Some((*protocol).to_owned()),
            port: Some(IntOrString::Int(*port)),
            end_port: None,
        })
        .collect()
}

/// The distinct ports of `host:port` bootstrap addresses (Kafka's default
/// 9092 where none is given).
fn broker_ports(brokers: &[String]) -> BTreeSet<i32> {
    brokers
        .iter()
        .map(|b| {
            b.rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .unwrap_or(9092)
        })
        .collect()
}

/// The port of the X API the producers are sent to.
fn x_api_port(cfg: &RenderConfig) -> i32 {
    let Some(url) = &cfg.x_api_base_url else {
        return X_API_PORT;
    };
    match url.parse::<http::Uri>() {
        Ok(uri) => uri
            .port_u16()
            .map(i32::from)
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                X_API_PORT
            }),
        Err(_) => X_API_PORT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TwitterStreamSpec;

    fn stream(network_policy: Option<serde_json::Value>) -> TwitterStream {
        let mut spec = serde_json::json!({
            "keyword": "k",
            "kafka": {"brokers": ["kafka-0.kafka:9093", "kafka-1.kafka:9093", "10.0.0.7:19092"], "topic": "t"},
        });
        if let Some(p) = network_policy {
            spec["networkPolicy"] = p;
        }
        let spec: TwitterStreamSpec = serde_json::from_value(spec).expect("spec");
        let mut t = TwitterStream::new("s", spec);
        t.metadata.namespace = Some("team".into());
        t.metadata.uid = Some("u".into());
        t
    }

    fn egress_ports(p: &NetworkPolicy) -> Vec<Vec<(String, i32)>> {
        let spec = p.spec.as_ref().expect("spec");
        spec.egress
            .as_ref()
            .expect("egress")
            .iter()
            .map(|r| {
                r.ports
                    .as_ref()
                    .expect("ports")
                    .iter()
                    .map(|p| {
                        let port = match p.port {
                            Some(IntOrString::Int(i)) => i,
                            _ => -1,
                        };
                        (p.protocol.clone().unwrap_or_default(), port)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn none_unless_asked_for() {
        assert!(network_policies(&stream(None), &RenderConfig::new("w")).is_empty());
    }

    #[test]
    fn each_component_may_reach_dns_the_brokers_and_only_the_producer_the_x_api() {
        let mut cfg = RenderConfig::new("w");
        cfg.x_api_base_url = Some("https://x-proxy.internal:8443/".into());
        let p = network_policies(&stream(Some(serde_json::json!({}))), &cfg);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].metadata.name.as_deref(), Some("s-producer"));
        assert_eq!(p[1].metadata.name.as_deref(), Some("s-consumer"));
        let dns = vec![("UDP".to_owned(), 53), ("TCP".to_owned(), 53)];
        let kafka = vec![("TCP".to_owned(), 9093), ("TCP".to_owned(), 19092)];
        assert_eq!(
            egress_ports(&p[0]),
            vec![dns.clone(), kafka.clone(), vec![("TCP".to_owned(), 8443)]]
        );
        assert_eq!(egress_ports(&p[1]), vec![dns, kafka]);
        for policy in &p {
            let spec = policy.spec.as_ref().expect("spec");
            assert_eq!(
                spec.policy_types.as_deref(),
                Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
            );
            // Unnarrowed: any destination, any source of the metrics port.
            assert!(
                spec.egress
                    .as_ref()
                    .expect("egress")
                    .iter()
                    .all(|r| r.to.is_none())
            );
            assert!(spec.ingress.as_ref().expect("ingress")[0].from.is_none());
            assert!(policy.metadata.owner_references.is_some());
        }
        let producer_selector = p[0].spec.as_ref().and_then(|s| s.pod_selector.clone());
        assert_eq!(
            producer_selector.and_then(|s| s.match_labels),
            Some(selector_labels(&stream(None), Component::Producer))
        );
    }

    #[test]
    fn peers_narrow_the_destinations_and_sources() {
        let p = network_policies(
            &stream(Some(serde_json::json!({
                "kafka": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}],
                "xApi": [{"ipBlock": {"cidr": "192.0.2.0/24"}}],
                "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            }))),
            &RenderConfig::new("w"),
        );
        let spec = p[0].spec.as_ref().expect("spec");
        let egress = spec.egress.as_ref().expect("egress");
        assert!(egress[0].to.is_none(), "DNS anywhere");
        assert!(
            egress[1]
                .to
                .as_ref()
                .is_some_and(|t| t[0].namespace_selector.is_some())
        );
        assert!(
            egress[2]
                .to
                .as_ref()
                .is_some_and(|t| t[0].ip_block.is_some())
        );
        assert_eq!(egress_ports(&p[0])[2], vec![("TCP".to_owned(), 443)]);
        assert!(spec.ingress.as_ref().expect("ingress")[0].from.is_some());
    }

    #[test]
    fn x_api_ports() {
        let mut cfg = RenderConfig::new("w");
        assert_eq!(x_api_port(&cfg), 443);
        cfg.x_api_base_url = Some("http://127.0.0.1:41234".into());
        assert_eq!(x_api_port(&cfg), 41234);
        cfg.x_api_base_url = Some("http://proxy.internal".into());
        assert_eq!(x_api_port(&cfg), 80);
        assert_eq!(
            broker_ports(&["[::1]:9094".into(), "kafka".into()]),
            BTreeSet::from([9092, 9094])
        );
    }
}
