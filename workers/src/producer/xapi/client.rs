//! The HTTP client: one search request, one page or an [`XApiError`].

use super::error::{ErrorBody, XApiError};
use super::query::SearchRequest;
use super::rate_limit::RateLimit;
use super::usage::ProjectUsage;
use super::wire::SearchPage;
use crate::producer::auth::{Auth, encode_query};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use std::time::Duration;

/// HTTP client for the X API v2.
#[derive(Debug, Clone)]
pub struct XApiClient {
    http: reqwest::Client,
    base: reqwest::Url,
}

impl XApiClient {
    /// `timeout` bounds a whole request, so a stalled connection cannot hang
    /// a poll.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, XApiError> {
        crate::common::install_tls_provider();
        let base = reqwest::Url::parse(base_url.trim_end_matches('/')).map_err(|e| {
            XApiError::BaseUrl {
                url: base_url.to_owned(),
                reason: e.to_string(),
            }
        })?;
        if base.query().is_some() || base.cannot_be_a_base() {
            return Err(XApiError::BaseUrl {
                url: base_url.to_owned(),
                reason: "must be scheme://host[:port][/path] without a query".to_owned(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!(
                "twitterstream-producer/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(XApiError::Client)?;
        Ok(Self { http, base })
    }

    fn url(&self, path: &str) -> String {
        // Url normalises scheme and host case and drops a default port, which
        // is what the OAuth signature base string requires.
        let mut u = self.base.clone();
        let joined = format!("{}{}", u.path().trim_end_matches('/'), path);
        u.set_path(&joined);
        u.to_string()
    }

    /// Fetches one page. Non-2xx answers are `XApiError::Status` with X's
    /// error body and the rate-limit headers.
    pub(crate) async fn search(
        &self,
        auth: &Auth,
        req: &SearchRequest,
    ) -> Result<SearchPage, XApiError> {
        self.get(auth, req.endpoint.path(), &req.params(), SearchPage::parse)
            .await
    }

    /// The X project's post usage this period (`GET /2/usage/tweets`, app-only).
    pub(crate) async fn usage(&self, auth: &Auth) -> Result<ProjectUsage, XApiError> {
        self.get(auth, "/2/usage/tweets", &[], |body, _| {
            ProjectUsage::parse(body)
        })
        .await
    }

    /// One GET: a 2xx answer's body (and rate-limit headers) parsed by
    /// `parse`, or `XApiError::Status` with X's error body.
    async fn get<T>(
        &self,
        auth: &Auth,
        path: &str,
        params: &[(String, String)],
        parse: impl FnOnce(&[u8], RateLimit) -> Result<T, serde_json::Error>,
    ) -> Result<T, XApiError> {
        let url = self.url(path);
        let mut header = HeaderValue::from_str(&auth.header("GET", &url, params)).map_err(|e| {
            XApiError::BaseUrl {
                url: url.clone(),
                reason: format!("unusable Authorization header: {e}"),
            }
        })?;
        header.set_sensitive(true);
        let full = if params.is_empty() {
            url.clone()
        } else {
            format!("{url}?{}", encode_query(params))
        };
        let wrap = |e: reqwest::Error| {
            if e.is_timeout() {
                XApiError::Timeout { url: url.clone() }
            } else {
                XApiError::Transport {
                    url: url.clone(),
                    source: e,
                }
            }
        };
        let resp = self
            .http
            .get(&full)
            .header(AUTHORIZATION, header)
            .send()
            .await
            .map_err(wrap)?;
        let status = resp.status();
        let rate_limit = RateLimit::from_headers(resp.headers());
        let body = resp.bytes().await.map_err(wrap)?;
        if !status.is_success() {
            return Err(XApiError::Status {
                url,
                status: status.as_u16(),
                body: Box::new(ErrorBody::parse(&body)),
                rate_limit,
            });
        }
        parse(&body, rate_limit).map_err(|source| XApiError::Malformed { url, source })
    }
}
