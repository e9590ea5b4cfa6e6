//! The search polling state machine.
//!
//! Each poll fetches every page (via `next_token`) of the tweets newer than
//! the cursor (`since_id`), newest first. The poller hands the pages out one
//! [`Batch`] at a time and never moves the cursor by itself: the last batch of
//! a poll carries the `since_id` to persist, and the caller passes it to
//! [`SearchPoller::commit`] once every batch of the poll is durably delivered.
//! A crash before that re-fetches the poll (at-least-once, duplicates keyed
//! by tweet id); nothing is skipped.
//!
//! Transient trouble (429, exhausted quota, 5xx, timeouts, malformed bodies,
//! bad or rotated credentials) is waited out inside [`SearchPoller::next_batch`];
//! only errors that retrying cannot fix are returned.

use super::auth::Auth;
use super::backoff::{Backoff, BackoffConfig};
use super::clock::{Clock, SystemClock};
use super::credentials::CredentialsProvider;
use super::xapi::{
    ApiErrorItem, Endpoint, ProjectUsage, RateLimit, ReceivedTweet, SearchPage, SearchRequest,
    XApiClient, XApiError, build_query, snowflake_time,
};
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;
use std::time::Duration;
use twitterstream_contract::producer::{ProducerArgs, SearchEndpoint};

/// How far back `/2/tweets/search/recent` reaches.
pub(crate) const RECENT_WINDOW: TimeDelta = TimeDelta::days(7);
/// X rejects `start_time`/`end_time` closer than this to the request time.
const MIN_AGE: TimeDelta = TimeDelta::seconds(10);
/// How often a reached post cap is tried again when its reset day is
/// unknown (no app-only credentials to read the usage with).
const CAP_RECHECK: TimeDelta = TimeDelta::hours(1);
/// Slack added to times X announces (resets are in whole seconds, "created
/// after" times in minutes), so the retry does not land on the boundary.
const MARGIN: TimeDelta = TimeDelta::seconds(1);

/// What to search for and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    pub keyword: String,
    pub language: Option<String>,
    pub include_retweets: bool,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Without `start_time` and before the first cursor: how far back the
    /// first poll begins (`None`: all recent search holds, 7 days).
    pub lookback: Option<TimeDelta>,
    pub min_faves: Option<u64>,
    pub poll_interval: Duration,
    pub endpoint: SearchEndpoint,
    /// Page size (X allows 10..=100 on recent, 10..=500 on all).
    pub max_results: u32,
    /// Backoff for 5xx, timeouts and malformed responses.
    pub backoff: BackoffConfig,
    /// Backoff for 401/403: slower, since only a credentials rotation fixes it.
    pub auth_backoff: BackoffConfig,
}

impl SearchConfig {
    pub fn new(keyword: impl Into<String>) -> Self {
        Self {
            keyword: keyword.into(),
            language: None,
            include_retweets: false,
            start_time: None,
            end_time: None,
            lookback: None,
            min_faves: None,
            poll_interval: Duration::from_secs(10),
            endpoint: SearchEndpoint::Auto,
            max_results: 100,
            backoff: BackoffConfig::default(),
            auth_backoff: BackoffConfig {
                initial: Duration::from_secs(5),
                max: Duration::from_secs(5 * 60),
            },
        }
    }

    pub(crate) fn from_args(args: &ProducerArgs) -> Result<Self, SearchError> {
        let keyword = args
            .keyword
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(SearchError::NoKeyword)?;
        Ok(Self {
            language: args.language.clone(),
            include_retweets: args.include_retweets,
            start_time: args.start_time,
            end_time: args.end_time,
            lookback: i64::try_from(args.lookback_seconds)
                .ok()
                .and_then(TimeDelta::try_seconds),
            min_faves: args.min_faves,
            poll_interval: Duration::from_secs(args.poll_interval_seconds),
            endpoint: args.search_endpoint,
            ..Self::new(keyword)
        })
    }

    pub(crate) fn query(&self) -> String {
        build_query(
            &self.keyword,
            self.language.as_deref(),
            self.include_retweets,
        )
    }
}

/// `auto` is `recent`, unless the oldest tweet wanted is beyond recent's
/// 7 days and the credentials are app-only (which full-archive requires).
pub(crate) fn choose_endpoint(
    setting: SearchEndpoint,
    oldest_wanted: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    app_only: bool,
) -> Endpoint {
    match setting {
        SearchEndpoint::Recent => Endpoint::Recent,
        SearchEndpoint::All => Endpoint::All,
        SearchEndpoint::Auto => {
            if app_only && oldest_wanted.is_some_and(|t| t < now - RECENT_WINDOW) {
                Endpoint::All
            } else {
                Endpoint::Recent
            }
        }
    }
}

/// Something worth surfacing (status conditions, metrics) while the poller
/// keeps going.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchEvent {
    /// 401/403: the credentials are wrong or not allowed on this endpoint.
    Unauthorized {
        status: u16,
        auth: &'static str,
        detail: String,
        retry_in: Duration,
    },
    /// The credentials could not be read.
    CredentialsUnavailable { error: String, retry_in: Duration },
    /// 429: waiting until the window resets.
    RateLimited {
        until: Option<DateTime<Utc>>,
        wait: Duration,
    },
    /// `x-rate-limit-remaining: 0`: waiting for the reset before asking again.
    QuotaExhausted {
        until: DateTime<Utc>,
        wait: Duration,
    },
    /// 5xx, timeout, transport error or malformed body: backing off.
    /// `status` is the HTTP status when there was an answer.
    Transient {
        error: String,
        status: Option<u16>,
        retry_in: Duration,
    },
    /// The cursor (or start time) is older than the endpoint allows; polling
    /// resumes from `fallback_start`.
    CursorTooOld {
        parameter: String,
        fallback_start: DateTime<Utc>,
    },
    /// A 200 carried `errors` next to `data`; the data was kept.
    PartialErrors { errors: Vec<ApiErrorItem> },
    /// 429 `UsageCapExceeded`: the X project's post cap is reached; no
    /// request until `until` (its reset, when `usage` could be read).
    UsageCapped {
        until: DateTime<Utc>,
        wait: Duration,
        usage: Option<ProjectUsage>,
    },
}

/// Counters since the poller was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchStats {
    pub(crate) requests: u64,
    pub(crate) polls: u64,
    pub(crate) pages: u64,
    pub tweets: u64,
    pub malformed: u64,
    pub filtered: u64,
    pub partial_errors: u64,
    pub rate_limited: u64,
    pub transient_errors: u64,
    pub unauthorized: u64,
    pub cursor_fallbacks: u64,
    pub usage_capped: u64,
}

/// One page of a poll, ready for delivery.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Tweets that passed the filters, newest first.
    pub tweets: Vec<ReceivedTweet>,
    pub malformed: usize,
    /// Dropped by `min_faves`.
    pub filtered: usize,
    pub partial_errors: Vec<ApiErrorItem>,
    pub endpoint: Endpoint,
    /// Whether this is the last page of its poll.
    pub end_of_poll: bool,
    /// On the last page of a poll that found tweets: the `since_id` to
    /// persist and pass to [`SearchPoller::commit`] once this batch and the
    /// earlier batches of the poll are delivered.
    pub commit: Option<String>,
}

/// Errors that retrying does not fix.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("no search keyword configured")]
    NoKeyword,
    #[error("X API rejected the search for {query:?} (fix the configuration): {source}")]
    Rejected {
        query: String,
        #[source]
        source: Box<XApiError>,
    },
}

/// The state of one poll in progress.
#[derive(Debug, Clone)]
struct Poll {
    endpoint: Endpoint,
    since_id: Option<String>,
    until_id: Option<String>,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    next_token: Option<String>,
    pages: u64,
    newest_id: Option<String>,
}

/// A poll committed in part: its tweets from `until` to `newest` are
/// delivered, the older ones (down to the cursor) are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPoll {
    pub newest: String,
    pub until: String,
}

type EventSink = Arc<dyn Fn(&SearchEvent) + Send + Sync>;

/// Polls X API v2 search; see the module documentation.
pub struct SearchPoller {
    client: XApiClient,
    credentials: CredentialsProvider,
    config: SearchConfig,
    query: String,
    clock: Arc<dyn Clock>,
    since_id: Option<String>,
    /// The poll committed in part, which the next poll completes.
    open: Option<OpenPoll>,
    /// Replaces `start_time` after X refused a too-old cursor, until a new
    /// cursor is committed.
    fallback_start: Option<DateTime<Utc>>,
    /// Where polls without a start time or a cursor begin (`config.lookback`
    /// before the first of them).
    lookback_start: Option<DateTime<Utc>>,
    /// The refused cursor: tweets up to it were delivered before, so they are
    /// dropped if the fallback window returns them again.
    floor_id: Option<String>,
    poll: Option<Poll>,
    next_poll_at: Option<DateTime<Utc>>,
    rate_limit: RateLimit,
    transient: Backoff,
    auth_backoff: Backoff,
    stats: SearchStats,
    on_event: Option<EventSink>,
    window_closed: bool,
}

impl std::fmt::Debug for SearchPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchPoller")
            .field("query", &self.query)
            .field("since_id", &self.since_id)
            .field("fallback_start", &self.fallback_start)
            .field("poll", &self.poll)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SearchPoller {
    pub fn new(client: XApiClient, credentials: CredentialsProvider, config: SearchConfig) -> Self {
        let query = config.query();
        Self {
            transient: Backoff::new(config.backoff),
            auth_backoff: Backoff::new(config.auth_backoff),
            client,
            credentials,
            config,
            query,
            clock: Arc::new(SystemClock),
            since_id: None,
            open: None,
            fallback_start: None,
            lookback_start: None,
            floor_id: None,
            poll: None,
            next_poll_at: None,
            rate_limit: RateLimit::default(),
            stats: SearchStats::default(),
            on_event: None,
            window_closed: false,
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Resumes after a persisted cursor.
    pub fn with_since_id(mut self, since_id: Option<String>) -> Self {
        self.since_id = since_id;
        self
    }

    /// Resumes a poll committed in part: the next poll asks only for the
    /// tweets older than `until`, and its end moves the cursor to `newest`.
    pub(crate) fn with_open_poll(mut self, open: Option<OpenPoll>) -> Self {
        self.open = open;
        self
    }

    pub fn on_event(mut self, sink: impl Fn(&SearchEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(sink));
        self
    }

    /// The committed cursor: the next poll returns tweets newer than this.
    pub fn since_id(&self) -> Option<&str> {
        self.since_id.as_deref()
    }

    pub fn stats(&self) -> &SearchStats {
        &self.stats
    }

    /// The rate-limit headers of the last response.
    pub fn rate_limit(&self) -> RateLimit {
        self.rate_limit
    }

    /// True once a poll has covered a configured `end_time` completely:
    /// later polls cannot find anything new.
    pub(crate) fn window_closed(&self) -> bool {
        self.window_closed
    }

    /// The poll committed in part, if any.
    pub fn open_poll(&self) -> Option<&OpenPoll> {
        self.open.as_ref()
    }

    /// The open poll that delivering the poll in progress from `until` (its
    /// oldest tweet so far) to its newest would leave, to persist with that
    /// part; nothing moves until [`SearchPoller::commit_part`]. `None` when
    /// no poll with tweets is in progress.
    pub fn open_part(&self, until: &str) -> Option<OpenPoll> {
        let newest = self.poll.as_ref()?.newest_id.clone()?;
        Some(OpenPoll {
            newest,
            until: until.to_owned(),
        })
    }

    /// Records that a part named by [`SearchPoller::open_part`] is delivered:
    /// the next poll, should this one be abandoned, asks only for the rest.
    pub fn commit_part(&mut self, open: OpenPoll) {
        self.open = Some(open);
    }

    /// Forgets the poll in progress (a part of it could not be delivered):
    /// the next poll starts again from what was committed.
    pub fn abandon_poll(&mut self) {
        self.poll = None;
    }

    /// Advances the cursor to a batch's `commit` once it is delivered.
    /// Moving backwards is ignored, so a stale commit cannot re-fetch tweets.
    pub fn commit(&mut self, since_id: &str) {
        self.open = None;
        let newer = match &self.since_id {
            None => true,
            Some(cur) => id_cmp(since_id, cur).is_gt(),
        };
        if newer {
            self.since_id = Some(since_id.to_owned());
            self.fallback_start = None;
            self.floor_id = None;
        }
    }

    fn emit(&self, event: SearchEvent) {
        if let Some(sink) = &self.on_event {
            sink(&event);
        }
    }

    async fn sleep(&self, d: Duration) {
        if !d.is_zero() {
            self.clock.sleep(d).await;
        }
    }

    fn until(&self, t: DateTime<Utc>) -> Duration {
        (t - self.clock.now()).to_std().unwrap_or(Duration::ZERO)
    }

    /// The next page, waiting as needed: for the poll interval between polls,
    /// for rate-limit resets, and through transient failures.
    pub async fn next_batch(&mut self) -> Result<Batch, SearchError> {
        loop {
            if self.poll.is_none() {
                if let Some(at) = self.next_poll_at {
                    self.sleep(self.until(at)).await;
                }
                let now = self.clock.now();
                self.next_poll_at = Some(
                    now + TimeDelta::from_std(self.config.poll_interval)
                        .unwrap_or(TimeDelta::days(1)),
                );
                match self.start_poll(now) {
                    Some(p) => {
                        self.stats.polls += 1;
                        self.poll = Some(p);
                    }
                    None => return Ok(self.empty_batch()),
                }
            }
            if self.rate_limit.remaining == Some(0)
                && let Some(reset) = self.rate_limit.reset
                && reset > self.clock.now()
            {
                let until = reset + MARGIN;
                let wait = self.until(until);
                tracing::info!(%until, ?wait, "X API quota for this window used up; waiting for the reset");
                self.emit(SearchEvent::QuotaExhausted { until, wait });
                self.sleep(wait).await;
            }
            // Forget the last answer's quota: the next answer brings fresh numbers.
            self.rate_limit = RateLimit::default();

            let credentials = match self.credentials.current() {
                Ok(c) => c,
                Err(e) => {
                    let retry_in = self.auth_backoff.next_delay();
                    tracing::error!(error = %e, ?retry_in, "cannot read X API credentials");
                    self.emit(SearchEvent::CredentialsUnavailable {
                        error: e.to_string(),
                        retry_in,
                    });
                    self.sleep(retry_in).await;
                    continue;
                }
            };
            let Some(poll) = self.poll.as_ref() else {
                continue;
            };
            let Some(auth) = Auth::choose(&credentials, poll.endpoint == Endpoint::All) else {
                continue;
            };
            let request = SearchRequest {
                endpoint: poll.endpoint,
                query: self.query.clone(),
                since_id: poll.since_id.clone(),
                until_id: poll.until_id.clone(),
                start_time: poll.start_time,
                end_time: poll.end_time,
                max_results: self.config.max_results,
                next_token: poll.next_token.clone(),
            };
            self.stats.requests += 1;
            match self.client.search(&auth, &request).await {
                Ok(page) => {
                    self.transient.reset();
                    self.auth_backoff.reset();
                    self.rate_limit = page.rate_limit;
                    return Ok(self.finish_page(page));
                }
                Err(e) => self.recover(e, &auth, &request).await?,
            }
        }
    }

    /// Decides the next step after a failed request: returns after waiting
    /// for a retry, or fails for errors retrying cannot fix.
    async fn recover(
        &mut self,
        e: XApiError,
        auth: &Auth,
        request: &SearchRequest,
    ) -> Result<(), SearchError> {
        if let Some(rl) = e.rate_limit() {
            self.rate_limit = rl;
        }
        // Only the first page carries the cursor; a later page never gets this.
        if e.status() == Some(400)
            && request.next_token.is_none()
            && let Some(too_old) = e.too_old()
        {
            let now = self.clock.now();
            let earliest = too_old.earliest.unwrap_or(now - RECENT_WINDOW) + TimeDelta::minutes(1);
            // Start no later than the cursor's own creation time (its
            // snowflake, down to the whole second X accepts) so nothing after
            // it is lost; what it re-fetches is dropped by `floor_id`.
            let cursor_time = request
                .since_id
                .as_deref()
                .and_then(snowflake_time)
                .and_then(|t| DateTime::from_timestamp(t.timestamp(), 0));
            let fallback_start = [self.config.start_time, Some(earliest), cursor_time]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(earliest)
                .min(now - MIN_AGE - MARGIN);
            if request.start_time == Some(fallback_start) {
                // X refused the fallback itself (clock skew?): asking again at
                // once would spin, so wait like for any other failure.
                return self.transient_retry(e).await;
            }
            self.stats.cursor_fallbacks += 1;
            tracing::warn!(
                parameter = %too_old.parameter,
                since_id = ?request.since_id,
                %fallback_start,
                "X refused a cursor older than the endpoint allows; resuming from a start time"
            );
            self.emit(SearchEvent::CursorTooOld {
                parameter: too_old.parameter,
                fallback_start,
            });
            if request.since_id.is_some() {
                self.floor_id = request.since_id.clone();
            }
            self.since_id = None;
            self.fallback_start = Some(fallback_start);
            if let Some(p) = self.poll.as_mut() {
                p.since_id = None;
                p.start_time = Some(fallback_start);
            }
            return Ok(());
        }
        if e.usage_capped() {
            return self.wait_out_the_cap().await;
        }
        match e.status() {
            Some(429) => {
                self.stats.rate_limited += 1;
                let reset = self.rate_limit.reset.filter(|r| *r > self.clock.now());
                let (until, wait) = match reset {
                    Some(r) => (Some(r + MARGIN), self.until(r + MARGIN)),
                    // Without a usable reset header, back off like any overload.
                    None => (None, self.transient.next_delay()),
                };
                tracing::warn!(?until, ?wait, "X API rate limit hit (429)");
                self.emit(SearchEvent::RateLimited { until, wait });
                self.rate_limit = RateLimit::default();
                self.sleep(wait).await;
                Ok(())
            }
            Some(status @ (401 | 403)) => {
                self.stats.unauthorized += 1;
                let retry_in = self.auth_backoff.next_delay();
                let detail = match &e {
                    XApiError::Status { body, .. } => body.summary(),
                    other => other.to_string(),
                };
                tracing::error!(
                    status,
                    auth = auth.kind(),
                    endpoint = request.endpoint.path(),
                    %detail,
                    ?retry_in,
                    "X API refused the credentials; check the Secret (retrying, a rotation is picked up)"
                );
                self.emit(SearchEvent::Unauthorized {
                    status,
                    auth: auth.kind(),
                    detail,
                    retry_in,
                });
                self.sleep(retry_in).await;
                Ok(())
            }
            Some(s) if (400..500).contains(&s) => {
                self.poll = None;
                Err(SearchError::Rejected {
                    query: self.query.clone(),
                    source: Box::new(e),
                })
            }
            _ => self.transient_retry(e).await,
        }
    }

    /// The X project's post cap is reached: nothing is asked until it
    /// resets, which can be weeks (a rate limit's 429 lifts within 15
    /// minutes). The reset day comes from `GET /2/usage/tweets`, which needs
    /// app-only credentials; without them the cap is tried again hourly (a
    /// refused request reads no post).
    async fn wait_out_the_cap(&mut self) -> Result<(), SearchError> {
        self.stats.usage_capped += 1;
        self.rate_limit = RateLimit::default();
        let bearer = self
            .credentials
            .current()
            .ok()
            .and_then(|c| c.bearer.clone());
        let usage = match bearer {
            Some(token) => match self.client.usage(&Auth::Bearer(token)).await {
                Ok(u) => Some(u),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the X project's usage; trying again in an hour");
                    None
                }
            },
            None => None,
        };
        let now = self.clock.now();
        let until = usage.map_or(now + CAP_RECHECK, |u| u.next_reset(now)) + MARGIN;
        let wait = self.until(until);
        tracing::warn!(
            %until,
            ?wait,
            usage = usage.map(|u| u.usage),
            cap = usage.map(|u| u.cap),
            "the X project's post cap is reached (UsageCapExceeded): no request until it resets"
        );
        self.emit(SearchEvent::UsageCapped { until, wait, usage });
        self.sleep(wait).await;
        Ok(())
    }

    /// 5xx, timeouts, transport errors, truncated or malformed bodies: the
    /// same request is retried after a backoff, so no page is skipped.
    async fn transient_retry(&mut self, e: XApiError) -> Result<(), SearchError> {
        self.stats.transient_errors += 1;
        let retry_in = self.transient.next_delay();
        tracing::warn!(error = %e, ?retry_in, "X API request failed; backing off");
        self.emit(SearchEvent::Transient {
            error: e.to_string(),
            status: e.status(),
            retry_in,
        });
        self.sleep(retry_in).await;
        Ok(())
    }

    /// The parameters of a new poll, or `None` when there is nothing to ask
    /// yet (the configured window has not started).
    fn start_poll(&mut self, now: DateTime<Utc>) -> Option<Poll> {
        let latest_allowed = now - MIN_AGE;
        let since_id = self.since_id.clone();
        let start_time = if since_id.is_some() {
            None
        } else {
            self.fallback_start
                .or(self.config.start_time)
                .or_else(|| self.lookback_start(now))
        };
        if start_time.is_some_and(|s| s >= latest_allowed) {
            return None;
        }
        // X refuses an end_time less than 10 s old; tweets after the clamped
        // end are newer than this poll's newest_id, so the next poll gets them.
        let end_time = self.config.end_time.map(|e| e.min(latest_allowed));
        if let (Some(s), Some(e)) = (start_time, end_time)
            && e <= s
        {
            return None;
        }
        let app_only = self
            .credentials
            .current()
            .map(|c| c.is_app_only())
            .unwrap_or(false);
        let oldest_wanted = since_id.as_deref().and_then(snowflake_time).or(start_time);
        let endpoint = choose_endpoint(self.config.endpoint, oldest_wanted, now, app_only);
        self.window_closed = self.config.end_time.is_some_and(|e| e < latest_allowed);
        tracing::debug!(
            endpoint = endpoint.path(),
            ?since_id,
            ?start_time,
            ?end_time,
            "starting a search poll"
        );
        Some(Poll {
            endpoint,
            since_id,
            until_id: self.open.as_ref().map(|o| o.until.clone()),
            start_time,
            end_time,
            next_token: None,
            pages: 0,
            newest_id: self.open.as_ref().map(|o| o.newest.clone()),
        })
    }

    /// Without a start time or a cursor: `lookback` before the first poll,
    /// the same for the polls after it until one finds a post. Without it a
    /// first poll pages through all 7 days recent search holds, which X counts
    /// against the project's post cap (a Basic plan's month in one poll).
    fn lookback_start(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Inside recent search's 7 days by a minute: X refuses a start_time
        // even a moment older (one refused request, then the fallback).
        let lookback = self
            .config
            .lookback?
            .min(RECENT_WINDOW - TimeDelta::minutes(1));
        Some(*self.lookback_start.get_or_insert(now - lookback))
    }

    fn empty_batch(&self) -> Batch {
        Batch {
            tweets: Vec::new(),
            malformed: 0,
            filtered: 0,
            partial_errors: Vec::new(),
            endpoint: Endpoint::Recent,
            end_of_poll: true,
            commit: None,
        }
    }

    fn finish_page(&mut self, page: SearchPage) -> Batch {
        let Some(poll) = self.poll.as_mut() else {
            return self.empty_batch();
        };
        if poll.pages == 0 && poll.newest_id.is_none() {
            // The first page is the newest: its newest_id bounds the whole
            // poll. If X left meta out, the largest id seen is the same thing.
            // (A poll completing an open one keeps that one's newest.)
            poll.newest_id = page.meta.newest_id.clone().or_else(|| {
                page.tweets
                    .iter()
                    .map(|t| t.id().to_owned())
                    .max_by(|a, b| id_cmp(a, b))
            });
        }
        poll.pages += 1;
        let endpoint = poll.endpoint;
        let used_token = poll.next_token.take();
        // A token repeated back would loop forever; treat it as the end.
        poll.next_token = page
            .meta
            .next_token
            .clone()
            .filter(|t| Some(t) != used_token.as_ref());
        let end_of_poll = poll.next_token.is_none();
        let commit = if end_of_poll {
            poll.newest_id.clone()
        } else {
            None
        };
        if end_of_poll {
            self.poll = None;
        }

        let mut tweets = page.tweets;
        if let Some(floor) = &self.floor_id {
            tweets.retain(|t| id_cmp(t.id(), floor).is_gt());
        }
        let before = tweets.len();
        if let Some(min) = self.config.min_faves {
            tweets.retain(|t| t.tweet.like_count() >= min);
        }
        let filtered = before - tweets.len();
        self.stats.pages += 1;
        self.stats.tweets += tweets.len() as u64;
        self.stats.filtered += filtered as u64;
        self.stats.malformed += page.malformed as u64;
        if !page.errors.is_empty() {
            self.stats.partial_errors += page.errors.len() as u64;
            tracing::warn!(
                count = page.errors.len(),
                "X API returned partial errors alongside data; data kept"
            );
            self.emit(SearchEvent::PartialErrors {
                errors: page.errors.clone(),
            });
        }
        tracing::debug!(
            tweets = tweets.len(),
            filtered,
            malformed = page.malformed,
            end_of_poll,
            "search page received"
        );
        Batch {
            tweets,
            malformed: page.malformed,
            filtered,
            partial_errors: page.errors,
            endpoint,
            end_of_poll,
            commit,
        }
    }
}

/// Orders decimal tweet ids numerically without parsing (ids may outgrow u64
/// one day; strings compare correctly once lengths are equal).
pub(crate) fn id_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn auto_endpoint() {
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
        let old = Some(now - TimeDelta::days(30));
        let fresh = Some(now - TimeDelta::days(1));
        assert_eq!(
            choose_endpoint(SearchEndpoint::Auto, old, now, true),
            Endpoint::All
        );
        assert_eq!(
            choose_endpoint(SearchEndpoint::Auto, old, now, false),
            Endpoint::Recent
        );
        assert_eq!(
            choose_endpoint(SearchEndpoint::Auto, fresh, now, true),
            Endpoint::Recent
        );
        assert_eq!(
            choose_endpoint(SearchEndpoint::Auto, None, now, true),
            Endpoint::Recent
        );
        assert_eq!(
            choose_endpoint(SearchEndpoint::All, None, now, false),
            Endpoint::All
        );
        assert_eq!(
            choose_endpoint(SearchEndpoint::Recent, old, now, true),
            Endpoint::Recent
        );
    }

    #[test]
    fn ids_order_numerically() {
        assert!(id_cmp("10", "9").is_gt());
        assert!(id_cmp("1445078208190291968", "1445078208190291969").is_lt());
        assert!(id_cmp("007", "7").is_eq());
    }

    #[test]
    fn config_from_args() {
        use clap::Parser;
        let a = ProducerArgs::try_parse_from([
            "p",
            "--brokers",
            "k:1",
            "--topic",
            "t",
            "--stream-name",
            "s",
            "--keyword",
            "rust",
            "--language",
            "en",
            "--min-faves",
            "3",
        ])
        .unwrap();
        let c = SearchConfig::from_args(&a).unwrap();
        assert_eq!(c.query(), "rust lang:en -is:retweet");
        assert_eq!(c.min_faves, Some(3));
        assert_eq!(c.poll_interval, Duration::from_secs(10));
    }
}
