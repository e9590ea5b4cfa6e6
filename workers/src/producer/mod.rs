pub mod config;
pub mod auth;
pub mod backoff;
pub mod credentials;
pub mod search;
pub mod xapi;
