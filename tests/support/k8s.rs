//! Kubernetes helpers: clients for the admin and for a ServiceAccount token,
//! and throwaway namespaces.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::AuthInfo;
use kube::{Api, Client, Config};

/// A client with the admin credentials of `$KUBECONFIG`.
pub async fn admin_client() -> Client {
    crate::env_var("KUBECONFIG");
    let config = Config::infer()
        .await
        .expect("reading $KUBECONFIG written by tests/env/up");
    Client::try_from(config).expect("building a kube client")
}

/// A namespace deleted (in the background) when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = crate::unique_name(prefix);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "twitterstream.io/test": "true" } }
        }))
        .expect("namespace manifest");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating test namespace");
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime may be shutting down: delete
        // from a thread with its own runtime. Best effort: a failed test should
        // not hide its panic behind a cleanup error.
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            // A fresh client: the test's one is driven by the runtime this drop blocks.
            rt.block_on(async move {
                let client = Client::try_from(Config::infer().await.ok()?).ok()?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                    .ok()
            })
        });
        let _ = deleted.join();
    }
}

/// Issues a short-lived token for a ServiceAccount through the TokenRequest API.
pub async fn service_account_token(client: &Client, namespace: &str, sa: &str) -> String {
    try_service_account_token(client, namespace, sa)
        .await
        .expect("TokenRequest for the ServiceAccount")
}

/// [`service_account_token`], returning the error.
pub async fn try_service_account_token(
    client: &Client,
    namespace: &str,
    sa: &str,
) -> Result<String, String> {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let resp: TokenRequest = api
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("TokenRequest for ServiceAccount {namespace}/{sa}: {e}"))?;
    resp.status
        .map(|s| s.token)
        .ok_or_else(|| "no token in the TokenRequest status".to_string())
}

/// A client that authenticates with a bearer token only: the same server and
/// CA as the admin kubeconfig, none of its credentials.
pub async fn token_client(token: &str) -> Client {
    let mut config = Config::infer().await.expect("reading $KUBECONFIG");
    config.auth_info = AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).expect("building a token client")
}

/// Writes a kubeconfig that reaches the same apiserver as `$KUBECONFIG`
/// (server and CA) but authenticates with `token` only, as a pod's mounted
/// ServiceAccount token would.
pub fn write_token_kubeconfig(
    path: &std::path::Path,
    token: &str,
    namespace: &str,
) -> Result<(), String> {
    let admin =
        kube::config::Kubeconfig::read().map_err(|e| format!("reading $KUBECONFIG: {e}"))?;
    let context = admin
        .current_context
        .as_ref()
        .and_then(|c| admin.contexts.iter().find(|n| &n.name == c))
        .and_then(|c| c.context.clone())
        .ok_or("$KUBECONFIG has no current context")?;
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or("$KUBECONFIG has no cluster for its current context")?;
    let server = cluster.server.ok_or("cluster has no server")?;
    let ca = match (
        cluster.certificate_authority_data,
        cluster.certificate_authority,
    ) {
        (Some(data), _) => data,
        (None, Some(file)) => {
            use base64::Engine;
            let pem = std::fs::read(&file).map_err(|e| format!("reading CA {file}: {e}"))?;
            base64::engine::general_purpose::STANDARD.encode(pem)
        }
        (None, None) => return Err("cluster has no CA".into()),
    };
    let yaml = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "local", "cluster": { "server": server, "certificate-authority-data": ca } }],
        "users": [{ "name": "sa", "user": { "token": token } }],
        "contexts": [{ "name": "sa", "context": { "cluster": "local", "user": "sa", "namespace": namespace } }],
        "current-context": "sa",
    });
    let text = serde_yaml::to_string(&yaml).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}
