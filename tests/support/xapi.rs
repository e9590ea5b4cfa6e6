//! A local X API v2 search server speaking X's documented wire format.
//!
//! The real X API cannot be reached from the test machines, so this server
//! stands in for it — faithfully where the producer depends on the
//! protocol: OAuth 1.0a HMAC-SHA1 signatures are verified by code written
//! independently of the producer's signing, paging is newest first with
//! opaque `next_token`s, `since_id`/`start_time`/`end_time` filter, only the
//! requested `tweet.fields` are returned, errors use X's problem format, and
//! every answer carries the `x-rate-limit-*` headers. Faults (429, 5xx, slow
//! answers, truncated JSON, malformed tweets, partial errors, the too-old
//! `since_id` 400) are scripted per request, and every request is recorded.
//! The X project's monthly post cap is kept as X keeps it: each post a search
//! returns counts once per UTC day, `GET /2/usage/tweets` reports the figures,
//! and once the cap is reached searches get 429 `UsageCapExceeded` until the
//! reset (which a test can move).

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::any;
use base64::Engine;
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value, json};
use sha1::Sha1;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// X's epoch for snowflake ids (2010-11-04T01:42:54.657Z).
const TWITTER_EPOCH_MS: i64 = 1_288_834_974_657;

/// A snowflake id for a tweet created at `created_at` (`seq` tells apart
/// tweets of the same millisecond), so ids order like creation times, as on X.
pub fn snowflake(created_at: DateTime<Utc>, seq: u16) -> u64 {
    let ms = (created_at.timestamp_millis() - TWITTER_EPOCH_MS).max(0) as u64;
    (ms << 22) | u64::from(seq & 0x0fff)
}

/// A tweet of the corpus.
#[derive(Debug, Clone)]
pub struct TweetSpec {
    pub created_at: DateTime<Utc>,
    pub seq: u16,
    pub text: String,
    pub lang: String,
    pub author_id: String,
    pub like_count: u64,
    pub retweet: bool,
    /// Extra top-level fields, returned whether requested or not (stands in
    /// for fields X adds in the future).
    pub extra: Map<String, Value>,
}

impl TweetSpec {
    pub fn new(created_at: DateTime<Utc>, seq: u16, text: impl Into<String>) -> Self {
        Self {
            created_at,
            seq,
            text: text.into(),
            lang: "en".to_owned(),
            author_id: "2244994945".to_owned(),
            like_count: 0,
            retweet: false,
            extra: Map::new(),
        }
    }

    pub fn lang(mut self, lang: &str) -> Self {
        self.lang = lang.to_owned();
        self
    }

    pub fn likes(mut self, n: u64) -> Self {
        self.like_count = n;
        self
    }

    pub fn retweet(mut self) -> Self {
        self.retweet = true;
        self
    }

    pub fn extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn id(&self) -> String {
        snowflake(self.created_at, self.seq).to_string()
    }

    /// The full v2 object, every field X could return.
    fn to_json(&self) -> Value {
        let id = self.id();
        let hashtags: Vec<Value> = self
            .text
            .match_indices('#')
            .map(|(start, _)| {
                let tag: String = self.text[start + 1..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                json!({"start": start, "end": start + 1 + tag.len(), "tag": tag})
            })
            .collect();
        let mut v = json!({
            "id": id,
            "text": self.text,
            "edit_history_tweet_ids": [id],
            "created_at": self.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "lang": self.lang,
            "author_id": self.author_id,
            "public_metrics": {
                "retweet_count": 0, "reply_count": 0, "like_count": self.like_count,
                "quote_count": 0, "bookmark_count": 0, "impression_count": 10 * self.like_count
            },
            "entities": {"hashtags": hashtags},
        });
        if self.retweet
            && let Some(o) = v.as_object_mut()
        {
            o.insert(
                "referenced_tweets".into(),
                json!([{"type": "retweeted", "id": "1"}]),
            );
        }
        if let Some(o) = v.as_object_mut() {
            for (k, val) in &self.extra {
                o.insert(k.clone(), val.clone());
            }
        }
        v
    }
}

/// One scripted misbehaviour, consumed by the next authenticated search
/// request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 Too Many Requests with `x-rate-limit-reset` this far ahead.
    RateLimited { reset_in: Duration },
    /// A normal answer whose `x-rate-limit-remaining` is 0, reset this far ahead.
    QuotaExhausted { reset_in: Duration },
    /// An error status with X's problem body (e.g. 503).
    Status(u16),
    /// Wait this long before answering normally.
    Delay(Duration),
    /// A normal 200 answer cut in half.
    Truncated,
    /// A normal answer plus two elements of `data` that are not tweets.
    MalformedTweets,
    /// A normal answer plus an `errors` array (a partial error).
    PartialErrors,
    /// The 400 X sends for a `since_id` older than recent search allows.
    SinceIdTooOld,
}

/// How a request authenticated, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeenAuth {
    OAuth1 { consumer_key: String, token: String },
    Bearer,
    Rejected(String),
}

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub auth: SeenAuth,
    pub status: u16,
    pub fault: Option<Fault>,
    /// Ids of the tweets in `data` (none for errors).
    pub returned: Vec<String>,
}

impl RecordedRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// OAuth 1.0a user-context credentials the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKeys {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub token: String,
    pub token_secret: String,
}

impl UserKeys {
    pub fn new(ck: &str, cs: &str, t: &str, ts: &str) -> Self {
        Self {
            consumer_key: ck.to_owned(),
            consumer_secret: cs.to_owned(),
            token: t.to_owned(),
            token_secret: ts.to_owned(),
        }
    }
}

/// The X project's post cap, as the server counts it.
#[derive(Debug, Default)]
struct Project {
    cap: Option<u64>,
    reset: Option<DateTime<Utc>>,
    usage: u64,
    /// (UTC day, post id) already counted: X counts a post once a day.
    counted: HashSet<(NaiveDate, u64)>,
    capped_answers: u64,
}

impl Project {
    /// Whether a search now is refused; a reset that has passed starts a new
    /// period (usage 0, the next reset a month on).
    fn capped(&mut self, now: DateTime<Utc>) -> bool {
        if let Some(reset) = self.reset
            && reset <= now
        {
            self.usage = 0;
            self.counted.clear();
            self.reset = reset.checked_add_months(chrono::Months::new(1));
        }
        self.cap.is_some_and(|cap| self.usage >= cap)
    }

    fn count(&mut self, now: DateTime<Utc>, returned: &[String]) {
        for id in returned.iter().filter_map(|id| id.parse::<u64>().ok()) {
            if self.counted.insert((now.date_naive(), id)) {
                self.usage += 1;
            }
        }
    }
}

/// The project's figures as the server counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectFigures {
    /// Posts counted this period (once per post and UTC day).
    pub usage: u64,
    pub cap: Option<u64>,
    pub reset: Option<DateTime<Utc>>,
    /// Searches answered 429 `UsageCapExceeded`.
    pub capped_answers: u64,
}

#[derive(Debug, Default)]
struct ServerState {
    corpus: Vec<(u64, DateTime<Utc>, Value)>,
    user: Option<UserKeys>,
    bearer: Option<String>,
    faults: VecDeque<Fault>,
    requests: Vec<RecordedRequest>,
    nonces: HashSet<(String, String)>,
    window_reset: i64,
    window_used: u64,
    stream: StreamState,
    project: Project,
}

/// The running server; stops when dropped.
pub struct XApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for XApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const RATE_LIMIT: u64 = 450;

impl XApiServer {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ServerState::default()));
        let app = Router::new()
            .route("/2/tweets/search/recent", any(search))
            .route("/2/tweets/search/all", any(search))
            .route("/2/tweets/search/stream", any(stream_connect))
            .route("/2/tweets/search/stream/rules", any(stream_rules))
            .route("/2/usage/tweets", any(usage))
            .fallback(not_found)
            .with_state(state.clone());
        // Where pods reach it, on the real node's veth (or loopback).
        let listener = tokio::net::TcpListener::bind((crate::pods::host_ip().as_str(), 0))
            .await
            .unwrap_or_else(|e| panic!("cannot bind the X API test server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The filtered stream's rules: (id, value, tag).
    pub fn stream_rules(&self) -> Vec<(String, String, Option<String>)> {
        self.lock()
            .stream
            .rules
            .iter()
            .map(|r| (r.id.clone(), r.value.clone(), r.tag.clone()))
            .collect()
    }

    /// Adds a rule directly (as another app user would have).
    pub fn add_stream_rule(&self, value: &str, tag: Option<&str>) -> String {
        let mut st = self.lock();
        st.stream.next_rule_id += 1;
        let id = (1_800_000_000_000_000_000u64 + st.stream.next_rule_id).to_string();
        st.stream.rules.push(StreamRule {
            id: id.clone(),
            value: value.to_owned(),
            tag: tag.map(str::to_owned),
        });
        id
    }

    /// Filtered-stream connections open now, and opened in total.
    pub fn stream_connections(&self) -> (usize, usize) {
        let st = self.lock();
        (st.stream.open, st.stream.opened)
    }

    /// Sends tweets to every open stream connection whose rules match them
    /// (like X: a tweet posted while nobody is connected is not delivered
    /// later). Returns their ids.
    pub fn post_to_stream(&self, tweets: impl IntoIterator<Item = TweetSpec>) -> Vec<String> {
        let tx = self.stream_sender();
        tweets
            .into_iter()
            .map(|t| {
                let _ = tx.send(StreamMsg::Tweet(t.to_json()));
                t.id()
            })
            .collect()
    }

    /// A misbehaviour of the stream: `Status` answers the next connection
    /// attempt with that status; `Disconnect` closes the open connections;
    /// `Stall` makes them go silent (no data, no keep-alive).
    pub fn push_stream_fault(&self, fault: StreamFault) {
        match fault {
            StreamFault::Status(s) => self.lock().stream.connect_faults.push_back(s),
            StreamFault::Disconnect => {
                let _ = self.stream_sender().send(StreamMsg::Disconnect);
            }
            StreamFault::Stall => {
                let _ = self.stream_sender().send(StreamMsg::Stall);
            }
        }
    }

    /// How often an idle stream sends the keep-alive newline (X: 20 s; the
    /// default here is 2 s so tests are not slowed by the client's 20 s
    /// stall detection racing the keep-alive).
    pub fn set_stream_keepalive(&self, every: Duration) {
        self.lock().stream.keepalive = Some(every);
    }

    fn stream_sender(&self) -> tokio::sync::broadcast::Sender<StreamMsg> {
        self.lock().stream.sender()
    }

    /// A monthly post cap for the project, lifted at `reset` (and a month
    /// after each reset); usage so far stays.
    pub fn set_post_cap(&self, cap: u64, reset: DateTime<Utc>) {
        let mut st = self.lock();
        st.project.cap = Some(cap);
        st.project.reset = Some(reset);
    }

    /// Moves the cap's reset: one in the past starts a new period at the
    /// next request.
    pub fn move_cap_reset(&self, reset: DateTime<Utc>) {
        self.lock().project.reset = Some(reset);
    }

    pub fn project(&self) -> ProjectFigures {
        let st = self.lock();
        ProjectFigures {
            usage: st.project.usage,
            cap: st.project.cap,
            reset: st.project.reset,
            capped_answers: st.project.capped_answers,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Accept these OAuth 1.0a credentials (replacing earlier ones).
    pub fn set_user(&self, keys: Option<UserKeys>) {
        self.lock().user = keys;
    }

    /// Accept this app-only bearer token (replacing an earlier one).
    pub fn set_bearer(&self, token: Option<&str>) {
        self.lock().bearer = token.map(str::to_owned);
    }

    /// Adds tweets; returns their ids.
    pub fn add(&self, tweets: impl IntoIterator<Item = TweetSpec>) -> Vec<String> {
        let mut st = self.lock();
        tweets
            .into_iter()
            .map(|t| {
                let id = snowflake(t.created_at, t.seq);
                st.corpus.push((id, t.created_at, t.to_json()));
                id.to_string()
            })
            .collect()
    }

    /// Scripts faults for the next authenticated search requests, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// A tweet of the corpus as a search answer carries it when `fields`
    /// were requested in `tweet.fields`.
    pub fn served_json(&self, id: &str, fields: &[&str]) -> Option<Value> {
        let id: u64 = id.parse().ok()?;
        let st = self.lock();
        st.corpus
            .iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, _, t)| project(t, fields))
    }
}

async fn not_found(uri: Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Not Found Error",
        &format!("No route for {}", uri.path()),
        "about:blank",
    )
}

fn problem(status: StatusCode, title: &str, detail: &str, kind: &str) -> Response {
    json_response(
        status,
        &json!({"title": title, "detail": detail, "type": kind, "status": status.as_u16()}),
    )
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    bytes_response(status, body.to_string().into_bytes())
}

fn bytes_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn invalid_request(parameter: &str, value: &str, message: String) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({
            "errors": [{"parameters": {parameter: [value]}, "message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request"
        }),
    )
}

/// RFC 3986 section 2.3: everything but unreserved characters is encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Decodes an `application/x-www-form-urlencoded` component.
fn form_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// RFC 5849 section 3.4.1: the signature base string.
pub fn signature_base_string(method: &str, base_uri: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        enc(base_uri),
        enc(&normalized)
    )
}

/// RFC 5849 section 3.4.2: HMAC-SHA1 over the base string, base64.
pub fn hmac_sha1_signature(base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
    let key = format!("{}&{}", enc(consumer_secret), enc(token_secret));
    let mut mac = match Hmac::<Sha1>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("HMAC accepts keys of any length: {e}"),
    };
    mac.update(base_string.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Parses `OAuth k="v", ...` into decoded pairs.
fn parse_oauth_header(value: &str) -> Result<Vec<(String, String)>, String> {
    let rest = value.strip_prefix("OAuth ").ok_or("not an OAuth header")?;
    rest.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or(format!("bad parameter {p:?}"))?;
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or(format!("unquoted value in {p:?}"))?;
            Ok((
                percent_decode_str(k).decode_utf8_lossy().into_owned(),
                percent_decode_str(v).decode_utf8_lossy().into_owned(),
            ))
        })
        .collect()
}

fn verify_oauth1(
    st: &mut ServerState,
    method: &Method,
    base_uri: &str,
    query: &[(String, String)],
    header: &str,
) -> Result<SeenAuth, String> {
    let keys = st.user.clone().ok_or("user context not enabled")?;
    let oauth = parse_oauth_header(header)?;
    let get = |name: &str| {
        oauth
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or(format!("missing {name}"))
    };
    if get("oauth_signature_method")? != "HMAC-SHA1" {
        return Err("unsupported signature method".into());
    }
    if let Ok(v) = get("oauth_version")
        && v != "1.0"
    {
        return Err(format!("bad oauth_version {v}"));
    }
    let consumer_key = get("oauth_consumer_key")?;
    let token = get("oauth_token")?;
    if consumer_key != keys.consumer_key || token != keys.token {
        return Err("unknown consumer key or token".into());
    }
    let timestamp: i64 = get("oauth_timestamp")?
        .parse()
        .map_err(|_| "bad timestamp")?;
    if (timestamp - Utc::now().timestamp()).abs() > 300 {
        return Err("timestamp out of range".into());
    }
    let nonce = get("oauth_nonce")?;
    let signature = get("oauth_signature")?;
    let mut params: Vec<(String, String)> = query.to_vec();
    params.extend(
        oauth
            .iter()
            .filter(|(k, _)| k != "oauth_signature" && k != "realm")
            .cloned(),
    );
    let base = signature_base_string(method.as_str(), base_uri, &params);
    let expected = hmac_sha1_signature(&base, &keys.consumer_secret, &keys.token_secret);
    // Constant time, as a real server must.
    let same = expected.len() == signature.len()
        && expected
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err("signature mismatch".into());
    }
    if !st.nonces.insert((timestamp.to_string(), nonce)) {
        return Err("nonce replayed".into());
    }
    Ok(SeenAuth::OAuth1 {
        consumer_key,
        token,
    })
}

fn authenticate(
    st: &mut ServerState,
    method: &Method,
    base_uri: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> SeenAuth {
    let Some(h) = headers.get("authorization").and_then(|h| h.to_str().ok()) else {
        return SeenAuth::Rejected("no Authorization header".into());
    };
    if let Some(token) = h.strip_prefix("Bearer ") {
        return match &st.bearer {
            Some(b) if b == token => SeenAuth::Bearer,
            _ => SeenAuth::Rejected("unknown bearer token".into()),
        };
    }
    verify_oauth1(st, method, base_uri, query, h).unwrap_or_else(SeenAuth::Rejected)
}

/// A minimal reading of X's query language: terms (case-insensitive
/// substrings), `-term`, `OR` between groups, `lang:xx`, `-is:retweet`.
fn matches(query: &str, tweet: &Value) -> bool {
    let text = tweet["text"].as_str().unwrap_or("").to_lowercase();
    let lang = tweet["lang"].as_str().unwrap_or("");
    let is_retweet = tweet["referenced_tweets"]
        .as_array()
        .is_some_and(|a| a.iter().any(|r| r["type"] == "retweeted"));
    let cleaned = query.replace(['(', ')'], " ");
    let mut groups: Vec<Vec<String>> = vec![Vec::new()];
    let mut global_ok = true;
    for tok in cleaned.split_whitespace() {
        if tok == "OR" {
            groups.push(Vec::new());
        } else if let Some(l) = tok.strip_prefix("lang:") {
            global_ok &= lang == l;
        } else if tok == "-is:retweet" {
            global_ok &= !is_retweet;
        } else if let Some(g) = groups.last_mut() {
            g.push(tok.to_lowercase());
        }
    }
    global_ok
        && groups.iter().any(|g| {
            !g.is_empty()
                && g.iter().all(|t| match t.strip_prefix('-') {
                    Some(neg) => !text.contains(neg),
                    None => text.contains(t.as_str()),
                })
        })
}

/// Fields X returns only when asked for in `tweet.fields`.
const OPTIONAL_FIELDS: &[&str] = &[
    "attachments",
    "author_id",
    "context_annotations",
    "conversation_id",
    "created_at",
    "entities",
    "geo",
    "in_reply_to_user_id",
    "lang",
    "possibly_sensitive",
    "public_metrics",
    "referenced_tweets",
    "reply_settings",
    "source",
    "withheld",
];

fn project(tweet: &Value, fields: &[&str]) -> Value {
    let Some(o) = tweet.as_object() else {
        return tweet.clone();
    };
    Value::Object(
        o.iter()
            .filter(|(k, _)| !OPTIONAL_FIELDS.contains(&k.as_str()) || fields.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn parse_time(
    query: &[(String, String)],
    name: &str,
) -> Result<Option<DateTime<Utc>>, Box<Response>> {
    let Some((_, v)) = query.iter().find(|(k, _)| k == name) else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| {
            Box::new(invalid_request(
                name,
                v,
                format!("Invalid '{name}':'{v}'. '{name}' must be a valid RFC 3339 date-time."),
            ))
        })
}

fn encode_token(id: u64) -> String {
    // Opaque like X's tokens, but decodable here.
    format!("b26v89c19zqg8o3f{id:x}")
}

fn decode_token(token: &str) -> Option<u64> {
    u64::from_str_radix(token.strip_prefix("b26v89c19zqg8o3f")?, 16).ok()
}

async fn search(
    State(state): State<Arc<Mutex<ServerState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let query = parse_query(uri.query());
    let base_uri = base_uri(&headers, &uri);
    let all = uri.path().ends_with("/all");

    let (auth, capped, fault, reset, remaining) = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let auth = authenticate(&mut st, &method, &base_uri, &query, &headers);
        let capped = !matches!(auth, SeenAuth::Rejected(_)) && st.project.capped(Utc::now());
        if capped {
            st.project.capped_answers += 1;
        }
        let fault = match auth {
            SeenAuth::Rejected(_) => None,
            _ if capped => None,
            _ => st.faults.pop_front(),
        };
        let now = Utc::now().timestamp();
        if st.window_reset <= now {
            st.window_reset = now + 15 * 60;
            st.window_used = 0;
        }
        st.window_used += 1;
        (
            auth,
            capped,
            fault,
            st.window_reset,
            RATE_LIMIT.saturating_sub(st.window_used),
        )
    };

    if let Some(Fault::Delay(d)) = &fault {
        tokio::time::sleep(*d).await;
    }
    let (mut response, returned) = if capped {
        // X's answer, as its docs show it.
        let body = json!({
            "title": "UsageCapExceeded",
            "detail": "Usage cap exceeded: Monthly product cap",
            "type": "https://api.twitter.com/2/problems/usage-capped",
            "period": "Monthly",
            "scope": "Product"
        });
        (
            json_response(StatusCode::TOO_MANY_REQUESTS, &body),
            Vec::new(),
        )
    } else {
        answer(&state, &method, &query, all, &auth, fault.as_ref())
    };
    if response.status() == StatusCode::OK {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.project.count(Utc::now(), &returned);
    }
    let (reset, remaining) = match &fault {
        Some(Fault::RateLimited { reset_in }) => {
            (Utc::now().timestamp() + reset_in.as_secs() as i64, 0)
        }
        Some(Fault::QuotaExhausted { reset_in }) => {
            (Utc::now().timestamp() + reset_in.as_secs() as i64, 0)
        }
        _ => (reset, remaining),
    };
    let h = response.headers_mut();
    h.insert("x-rate-limit-limit", HeaderValue::from(RATE_LIMIT));
    h.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
    h.insert("x-rate-limit-reset", HeaderValue::from(reset));
    let record = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query,
        auth,
        status: response.status().as_u16(),
        fault,
        returned,
    };
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .push(record);
    response
}

/// The URI without its query as the client addressed it (the OAuth 1.0a
/// signature's base string URI).
fn base_uri(headers: &HeaderMap, uri: &Uri) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    format!("http://{host}{}", uri.path())
}

/// `GET /2/usage/tweets` (app-only): the project's usage, cap and reset day.
async fn usage(
    State(state): State<Arc<Mutex<ServerState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let base_uri = base_uri(&headers, &uri);
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let auth = authenticate(&mut st, &method, &base_uri, &[], &headers);
    let response = match auth {
        SeenAuth::Rejected(_) => json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}),
        ),
        SeenAuth::OAuth1 { .. } => problem(
            StatusCode::FORBIDDEN,
            "Unsupported Authentication",
            "Authenticating with OAuth 1.0a User Context is forbidden for this endpoint.  Supported authentication types are [OAuth 2.0 Application-Only].",
            "https://api.twitter.com/2/problems/unsupported-authentication",
        ),
        SeenAuth::Bearer => {
            st.project.capped(Utc::now());
            // Without a cap set: pay-per-use's 2 million, resetting on the 1st.
            let cap = st.project.cap.unwrap_or(2_000_000);
            let day = st.project.reset.map_or(1, |r| r.day());
            json_response(
                StatusCode::OK,
                &json!({"data": {
                    "project_id": "1",
                    "project_usage": st.project.usage.to_string(),
                    "project_cap": cap.to_string(),
                    "cap_reset_day": day
                }}),
            )
        }
    };
    st.requests.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: Vec::new(),
        auth,
        status: response.status().as_u16(),
        fault: None,
        returned: Vec::new(),
    });
    response
}

fn answer(
    state: &Arc<Mutex<ServerState>>,
    method: &Method,
    query: &[(String, String)],
    all: bool,
    auth: &SeenAuth,
    fault: Option<&Fault>,
) -> (Response, Vec<String>) {
    let none = Vec::new();
    match auth {
        SeenAuth::Rejected(_) => {
            return (
                json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}),
                ),
                none,
            );
        }
        SeenAuth::OAuth1 { .. } if all => {
            return (
                problem(
                    StatusCode::FORBIDDEN,
                    "Unsupported Authentication",
                    "Authenticating with OAuth 1.0a User Context is forbidden for this endpoint.  Supported authentication types are [OAuth 2.0 Application-Only].",
                    "https://api.twitter.com/2/problems/unsupported-authentication",
                ),
                none,
            );
        }
        _ => {}
    }
    if method != Method::GET {
        return (
            problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                "Method Not Allowed",
                "about:blank",
            ),
            none,
        );
    }
    match fault {
        Some(Fault::RateLimited { .. }) => {
            return (
                problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too Many Requests",
                    "Too Many Requests",
                    "about:blank",
                ),
                none,
            );
        }
        Some(Fault::Status(s)) => {
            let status = StatusCode::from_u16(*s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let reason = status.canonical_reason().unwrap_or("Error");
            return (problem(status, reason, reason, "about:blank"), none);
        }
        _ => {}
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let now = Utc::now();
    let Some(q) = param("query").filter(|q| !q.is_empty()) else {
        return (
            invalid_request(
                "query",
                "",
                "The `query` query parameter can not be empty".into(),
            ),
            none,
        );
    };
    let max_cap = if all { 500 } else { 100 };
    let max_results: u64 = match param("max_results").map(str::parse::<u64>) {
        None => 10,
        Some(Ok(n)) if (10..=max_cap).contains(&n) => n,
        Some(_) => {
            let v = param("max_results").unwrap_or("");
            return (
                invalid_request(
                    "max_results",
                    v,
                    format!(
                        "The `max_results` query parameter value [{v}] is not between 10 and {max_cap}"
                    ),
                ),
                none,
            );
        }
    };
    let (start, end) = match (
        parse_time(query, "start_time"),
        parse_time(query, "end_time"),
    ) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(r), _) | (_, Err(r)) => return (*r, none),
    };
    let week_ago = now - TimeDelta::days(7);
    let x_time = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%MZ").to_string();
    if let Some(s) = start {
        if !all && s < week_ago {
            let v = param("start_time").unwrap_or("");
            return (
                invalid_request(
                    "start_time",
                    v,
                    format!(
                        "Invalid 'start_time':'{v}'. 'start_time' must be on or after {}",
                        x_time(week_ago)
                    ),
                ),
                none,
            );
        }
        if s > now - TimeDelta::seconds(10) {
            let v = param("start_time").unwrap_or("");
            return (
                invalid_request(
                    "start_time",
                    v,
                    format!(
                        "Invalid 'start_time':'{v}'. 'start_time' must be a minimum of 10 seconds prior to the request time."
                    ),
                ),
                none,
            );
        }
    }
    if let Some(e) = end
        && e > now - TimeDelta::seconds(10)
    {
        let v = param("end_time").unwrap_or("");
        return (
            invalid_request(
                "end_time",
                v,
                format!(
                    "Invalid 'end_time':'{v}'. 'end_time' must be a minimum of 10 seconds prior to the request time."
                ),
            ),
            none,
        );
    }
    // A tweet id parameter, or X's 400 for one that is not a number.
    let id_param = |name: &str| match param(name).map(str::parse::<u64>) {
        None => Ok(None),
        Some(Ok(id)) => Ok(Some(id)),
        Some(Err(_)) => {
            let v = param(name).unwrap_or("");
            Err(Box::new(invalid_request(
                name,
                v,
                format!("The `{name}` query parameter value [{v}] is not valid"),
            )))
        }
    };
    let (since_id, until_id) = match (id_param("since_id"), id_param("until_id")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(r), _) | (_, Err(r)) => return (*r, none),
    };
    let oldest_allowed_id = snowflake(week_ago, 0);
    if let Some(id) = since_id
        && (fault == Some(&Fault::SinceIdTooOld) || (!all && id < oldest_allowed_id))
    {
        return (
            invalid_request(
                "since_id",
                &id.to_string(),
                format!(
                    "Invalid 'since_id':'{id}'. 'since_id' must be a tweet id created after {}. Please use a 'since_id' that is larger than {oldest_allowed_id}",
                    x_time(week_ago)
                ),
            ),
            none,
        );
    }
    let before_id = match param("next_token").or(param("pagination_token")) {
        None => None,
        Some(t) => match decode_token(t) {
            Some(id) => Some(id),
            None => {
                return (
                    invalid_request(
                        "next_token",
                        t,
                        format!("The `next_token` query parameter value [{t}] is not valid"),
                    ),
                    none,
                );
            }
        },
    };
    let fields: Vec<&str> = param("tweet.fields")
        .map(|f| f.split(',').collect())
        .unwrap_or_default();

    let mut hits: Vec<(u64, Value)> = {
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.corpus
            .iter()
            .filter(|(id, created, tweet)| {
                since_id.is_none_or(|s| *id > s)
                    && before_id.is_none_or(|b| *id < b)
                    && until_id.is_none_or(|u| *id < u)
                    && start.is_none_or(|s| *created >= s)
                    && end.is_none_or(|e| *created < e)
                    && (all || *created >= week_ago)
                    && matches(q, tweet)
            })
            .map(|(id, _, t)| (*id, project(t, &fields)))
            .collect()
    };
    hits.sort_by_key(|h| std::cmp::Reverse(h.0));
    let more = hits.len() as u64 > max_results;
    hits.truncate(max_results as usize);
    let returned: Vec<String> = hits.iter().map(|(id, _)| id.to_string()).collect();

    let mut meta = Map::new();
    if let (Some(first), Some(last)) = (hits.first(), hits.last()) {
        meta.insert("newest_id".into(), json!(first.0.to_string()));
        meta.insert("oldest_id".into(), json!(last.0.to_string()));
    }
    meta.insert("result_count".into(), json!(hits.len()));
    if more && let Some(last) = hits.last() {
        meta.insert("next_token".into(), json!(encode_token(last.0)));
    }
    let mut body = Map::new();
    let mut data: Vec<Value> = hits.into_iter().map(|(_, t)| t).collect();
    if fault == Some(&Fault::MalformedTweets) {
        data.insert(1.min(data.len()), json!({"text": "a tweet without an id"}));
        data.push(json!(42));
    }
    if !data.is_empty() {
        body.insert("data".into(), Value::Array(data));
    }
    if fault == Some(&Fault::PartialErrors) {
        body.insert(
            "errors".into(),
            json!([{
                "value": "1",
                "detail": "Could not find tweet with referenced_tweets.id: [1].",
                "title": "Not Found Error",
                "resource_type": "tweet",
                "parameter": "referenced_tweets.id",
                "resource_id": "1",
                "type": "https://api.twitter.com/2/problems/resource-not-found"
            }]),
        );
    }
    body.insert("meta".into(), Value::Object(meta));
    let mut bytes = Value::Object(body).to_string().into_bytes();
    if fault == Some(&Fault::Truncated) {
        bytes.truncate(bytes.len() / 2);
    }
    (bytes_response(StatusCode::OK, bytes), returned)
}

// ---------------------------------------------------------------------------
// Filtered stream: `GET /2/tweets/search/stream` (a never-ending body of
// `\r\n`-separated JSON lines with `matching_rules`, and keep-alive newlines)
// and `GET`/`POST /2/tweets/search/stream/rules`. App-only bearer only.

/// A scripted misbehaviour of the filtered stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamFault {
    Status(u16),
    Disconnect,
    Stall,
}

#[derive(Debug, Clone)]
struct StreamRule {
    id: String,
    value: String,
    tag: Option<String>,
}

#[derive(Debug, Clone)]
enum StreamMsg {
    Tweet(Value),
    Disconnect,
    Stall,
}

#[derive(Debug, Default)]
struct StreamState {
    rules: Vec<StreamRule>,
    next_rule_id: u64,
    connect_faults: VecDeque<u16>,
    open: usize,
    opened: usize,
    keepalive: Option<Duration>,
    tx: Option<tokio::sync::broadcast::Sender<StreamMsg>>,
}

impl StreamState {
    fn sender(&mut self) -> tokio::sync::broadcast::Sender<StreamMsg> {
        self.tx
            .get_or_insert_with(|| tokio::sync::broadcast::channel(100_000).0)
            .clone()
    }
}

/// Counts an open connection until the response body is dropped.
struct OpenGuard(Arc<Mutex<ServerState>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.stream.open = st.stream.open.saturating_sub(1);
    }
}

fn bearer_only(st: &ServerState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let h = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    match h.strip_prefix("Bearer ") {
        Some(t) if st.bearer.as_deref() == Some(t) => Ok(()),
        Some(_) | None if h.starts_with("OAuth ") => Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "Unsupported Authentication",
            "Authenticating with OAuth 1.0a User Context is forbidden for this endpoint.  Supported authentication types are [OAuth 2.0 Application-Only].",
            "https://api.twitter.com/2/problems/unsupported-authentication",
        ))),
        _ => Err(Box::new(json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}),
        ))),
    }
}

fn record(st: &mut ServerState, method: &Method, uri: &Uri, status: u16) {
    st.requests.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: parse_query(uri.query()),
        auth: SeenAuth::Bearer,
        status,
        fault: None,
        returned: Vec::new(),
    });
}

async fn stream_rules(
    State(state): State<Arc<Mutex<ServerState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(r) = bearer_only(&st, &headers) {
        record(&mut st, &method, &uri, r.status().as_u16());
        return *r;
    }
    let resp = if method == Method::GET {
        let data: Vec<Value> = st
            .stream
            .rules
            .iter()
            .map(|r| {
                let mut v = json!({"id": r.id, "value": r.value});
                if let (Some(t), Some(o)) = (&r.tag, v.as_object_mut()) {
                    o.insert("tag".into(), json!(t));
                }
                v
            })
            .collect();
        let n = data.len();
        let mut body = json!({"meta": {"sent": Utc::now().to_rfc3339(), "result_count": n}});
        if n > 0
            && let Some(o) = body.as_object_mut()
        {
            o.insert("data".into(), Value::Array(data));
        }
        json_response(StatusCode::OK, &body)
    } else if method == Method::POST {
        let Ok(req) = serde_json::from_slice::<Value>(&body) else {
            return problem(
                StatusCode::BAD_REQUEST,
                "Invalid Request",
                "body is not JSON",
                "https://api.twitter.com/2/problems/invalid-request",
            );
        };
        let mut created = 0;
        let mut deleted = 0;
        let mut added = Vec::new();
        if let Some(adds) = req["add"].as_array() {
            for a in adds {
                let Some(value) = a["value"].as_str() else {
                    continue;
                };
                st.stream.next_rule_id += 1;
                let id = (1_800_000_000_000_000_000u64 + st.stream.next_rule_id).to_string();
                let tag = a["tag"].as_str().map(str::to_owned);
                added.push(json!({"id": id, "value": value, "tag": tag}));
                st.stream.rules.push(StreamRule {
                    id,
                    value: value.to_owned(),
                    tag,
                });
                created += 1;
            }
        }
        if let Some(ids) = req["delete"]["ids"].as_array() {
            let ids: HashSet<&str> = ids.iter().filter_map(Value::as_str).collect();
            let before = st.stream.rules.len();
            st.stream.rules.retain(|r| !ids.contains(r.id.as_str()));
            deleted = before - st.stream.rules.len();
        }
        let mut summary =
            json!({"created": created, "not_created": 0, "valid": created, "invalid": 0});
        if deleted > 0 || req.get("delete").is_some() {
            summary = json!({"deleted": deleted, "not_deleted": 0});
        }
        let status = if created > 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let mut body = json!({"meta": {"sent": Utc::now().to_rfc3339(), "summary": summary}});
        if !added.is_empty()
            && let Some(o) = body.as_object_mut()
        {
            o.insert("data".into(), Value::Array(added));
        }
        json_response(status, &body)
    } else {
        problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "Method Not Allowed",
            "about:blank",
        )
    };
    record(&mut st, &method, &uri, resp.status().as_u16());
    resp
}

async fn stream_connect(
    State(state): State<Arc<Mutex<ServerState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (rx, keepalive) = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(r) = bearer_only(&st, &headers) {
            record(&mut st, &method, &uri, r.status().as_u16());
            return *r;
        }
        if let Some(s) = st.stream.connect_faults.pop_front() {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let reason = status.canonical_reason().unwrap_or("Error");
            record(&mut st, &method, &uri, s);
            return problem(status, reason, reason, "about:blank");
        }
        record(&mut st, &method, &uri, 200);
        st.stream.open += 1;
        st.stream.opened += 1;
        (
            st.stream.sender().subscribe(),
            st.stream.keepalive.unwrap_or(Duration::from_secs(2)),
        )
    };
    let fields: Vec<String> = parse_query(uri.query())
        .into_iter()
        .find(|(k, _)| k == "tweet.fields")
        .map(|(_, v)| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    struct Conn {
        rx: tokio::sync::broadcast::Receiver<StreamMsg>,
        state: Arc<Mutex<ServerState>>,
        keepalive: Duration,
        fields: Vec<String>,
        stalled: bool,
        _guard: OpenGuard,
    }
    let conn = Conn {
        rx,
        state: state.clone(),
        keepalive,
        fields,
        stalled: false,
        _guard: OpenGuard(state),
    };
    let body = futures::stream::unfold(conn, |mut c| async move {
        loop {
            if c.stalled {
                // Silent but open, until the client gives up and hangs up.
                std::future::pending::<()>().await;
            }
            let msg = tokio::select! {
                m = c.rx.recv() => m,
                _ = tokio::time::sleep(c.keepalive) => {
                    return Some((Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(b"\r\n")), c));
                }
            };
            match msg {
                Ok(StreamMsg::Tweet(t)) => {
                    let rules: Vec<Value> = {
                        let st = c.state.lock().unwrap_or_else(|e| e.into_inner());
                        st.stream
                            .rules
                            .iter()
                            .filter(|r| matches(&r.value, &t))
                            .map(|r| json!({"id": r.id, "tag": r.tag}))
                            .collect()
                    };
                    if rules.is_empty() {
                        continue;
                    }
                    let fields: Vec<&str> = c.fields.iter().map(String::as_str).collect();
                    let line = json!({"data": project(&t, &fields), "matching_rules": rules});
                    let mut bytes = line.to_string().into_bytes();
                    bytes.extend_from_slice(b"\r\n");
                    return Some((Ok(axum::body::Bytes::from(bytes)), c));
                }
                Ok(StreamMsg::Disconnect)
                | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return None;
                }
                Ok(StreamMsg::Stall) => c.stalled = true,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            }
        }
    });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}
