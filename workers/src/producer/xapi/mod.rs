//! X API v2 wire types and the HTTP client for recent and full-archive search.
//!
//! - `wire`: tweets and search pages as X sends them, and the time in a
//!   tweet id;
//! - `query`: what one search request asks for;
//! - `client`: the HTTP client;
//! - `error`: X's error bodies and [`XApiError`];
//! - `rate_limit`: the rate-limit headers;
//! - `v1`: v1.1 statuses converted to v2.

mod client;
mod error;
mod query;
mod rate_limit;
mod usage;
mod v1;
mod wire;

pub use client::XApiClient;
pub(crate) use error::{ApiErrorItem, XApiError};
pub use query::{Endpoint, SearchRequest, build_query};
pub(crate) use rate_limit::RateLimit;
pub use usage::ProjectUsage;
pub(crate) use v1::v1_status_to_v2;
pub use wire::{
    Entities, Hashtag, Mention, Meta, PublicMetrics, ReceivedTweet, SearchPage, TWEET_FIELDS,
    Tweet, snowflake_time,
};
