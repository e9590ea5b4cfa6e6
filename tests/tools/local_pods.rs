//! `local-pods --namespace NS`: runs the Deployments of a namespace as local
//! processes (see `twitterstream_tests::local_pods`) until SIGINT or SIGTERM.
//! The README's demo uses it to run the chart's operator and the pipelines it
//! renders, since the local environment's node (kwok) runs no containers.

use std::collections::BTreeSet;
use std::time::Duration;
use twitterstream_tests::k8s::admin_client;
use twitterstream_tests::local_pods::LocalPods;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let namespace = match (args.next().as_deref(), args.next()) {
        (Some("--namespace"), Some(ns)) => ns,
        _ => {
            eprintln!(
                "usage: local-pods --namespace NS   (needs KUBECONFIG and TWS_ENV_DIR from tests/env/up)"
            );
            std::process::exit(2);
        }
    };
    let client = admin_client().await;
    let pods = LocalPods::start(client, &namespace, None);
    let mut shown: BTreeSet<String> = BTreeSet::new();
    let mut errors = 0;
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("local-pods: cannot handle SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now: BTreeSet<String> = pods
            .pods()
            .iter()
            .map(|p| format!("{} ({}, log {})", p.name, p.argv.join(" "), p.log.display()))
            .collect();
        for p in now.difference(&shown) {
            eprintln!("local-pods: started {p}");
        }
        for p in shown.difference(&now) {
            eprintln!("local-pods: stopped {p}");
        }
        shown = now;
        let errs = pods.errors();
        for e in &errs[errors..] {
            eprintln!("local-pods: {e}");
        }
        errors = errs.len();
    }
    eprintln!("local-pods: stopping {} processes", shown.len());
    pods.stop();
}
