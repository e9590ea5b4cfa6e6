//! An OIDC token endpoint (OAuth 2.0 client credentials grant, RFC 6749
//! §4.4) for the OAUTHBEARER tests.
//!
//! There is no identity provider in this environment, so the tests serve the
//! token endpoint themselves, at the protocol level: librdkafka's own OIDC
//! client (`sasl.oauthbearer.method=oidc`) posts the grant with HTTP Basic
//! client authentication, and gets back an RS256 JWT signed with the key of
//! `$KAFKA_SECURITY_DIR/oauth/signing.key`. The brokers validate each token
//! for real (signature against `oauth/jwks.json`, issuer, audience, expiry),
//! which is the part of OAUTHBEARER that decides who gets in.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the environment keeps the OAuth material (tests/env/kafka-security.sh).
pub fn oauth_dir() -> PathBuf {
    PathBuf::from(crate::env_var("KAFKA_SECURITY_DIR")).join("oauth")
}

fn read(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// What the endpoint was asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Tokens issued.
    pub issued: u32,
    /// Requests refused (unknown client, wrong secret, another grant type).
    pub refused: u32,
    /// The scopes requested, in order.
    pub scopes: Vec<String>,
}

struct Issuer {
    key: jsonwebtoken::EncodingKey,
    issuer: String,
    audience: String,
    client_id: String,
    client_secret: String,
    lifetime_seconds: u64,
    grants: Mutex<Grants>,
}

/// A running token endpoint; stops when dropped.
pub struct TokenEndpoint {
    addr: SocketAddr,
    issuer: Arc<Issuer>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenEndpoint {
    /// Issues tokens the brokers trust, valid for `lifetime_seconds`, to the
    /// environment's OAuth client.
    pub async fn start(lifetime_seconds: u64) -> Self {
        Self::start_with_key(&oauth_dir().join("signing.key"), lifetime_seconds).await
    }

    /// Issues tokens signed with the RSA key in `key_file` (PKCS#8 PEM): a key
    /// of another issuer makes tokens the brokers refuse.
    pub async fn start_with_key(key_file: &Path, lifetime_seconds: u64) -> Self {
        let dir = oauth_dir();
        let pem = std::fs::read(key_file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", key_file.display()));
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
            .unwrap_or_else(|e| panic!("{} is not an RSA key: {e}", key_file.display()));
        let issuer = Arc::new(Issuer {
            key,
            issuer: read(&dir, "issuer"),
            audience: read(&dir, "audience"),
            client_id: read(&dir, "client_id"),
            client_secret: read(&dir, "client_secret"),
            lifetime_seconds,
            grants: Mutex::new(Grants::default()),
        });
        let app = Router::new()
            .route("/token", post(token))
            .with_state(issuer.clone());
        // Where pods reach it, on the real node's veth (or loopback).
        let listener = tokio::net::TcpListener::bind((crate::pods::host_ip().as_str(), 0))
            .await
            .unwrap_or_else(|e| panic!("cannot bind the token endpoint: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, issuer, task }
    }

    /// The token endpoint's URL.
    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// What was asked for so far.
    pub fn grants(&self) -> Grants {
        self.issuer
            .grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The client's id and secret from an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// The `application/x-www-form-urlencoded` body's fields.
fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

async fn token(State(issuer): State<Arc<Issuer>>, headers: HeaderMap, body: String) -> Response {
    let fields = form(&body);
    let refuse = |status, error| {
        issuer
            .grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused += 1;
        oauth_error(status, error)
    };
    if fields.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return refuse(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    match basic_credentials(&headers) {
        Some((id, secret)) if id == issuer.client_id && secret == issuer.client_secret => {}
        _ => return refuse(StatusCode::UNAUTHORIZED, "invalid_client"),
    }
    let now = chrono::Utc::now().timestamp();
    let scope = fields.get("scope").cloned().unwrap_or_default();
    let mut claims = serde_json::json!({
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": issuer.client_id,
        "iat": now,
        "exp": now + issuer.lifetime_seconds as i64,
    });
    // Like identity providers, no `scope` claim when none was asked for
    // (Kafka 4.1.1 refuses a token whose scope claim is empty).
    if !scope.is_empty() {
        claims["scope"] = scope.clone().into();
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("tws-oauth".to_owned());
    let jwt = match jsonwebtoken::encode(&header, &claims, &issuer.key) {
        Ok(jwt) => jwt,
        Err(e) => panic!("cannot sign a token: {e}"),
    };
    {
        let mut grants = issuer.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.issued += 1;
        grants.scopes.push(scope);
    }
    axum::Json(serde_json::json!({
        "access_token": jwt,
        "token_type": "Bearer",
        "expires_in": issuer.lifetime_seconds,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let mut h = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("id:se:cret");
        h.insert("authorization", format!("Basic {encoded}").parse().unwrap());
        assert_eq!(
            basic_credentials(&h),
            Some(("id".to_owned(), "se:cret".to_owned()))
        );
        h.insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
    }

    #[test]
    fn form_fields_are_percent_decoded() {
        let f = form("grant_type=client_credentials&scope=kafka%3Awrite+read");
        assert_eq!(f["grant_type"], "client_credentials");
        assert_eq!(f["scope"], "kafka:write read");
    }
}
