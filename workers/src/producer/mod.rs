pub mod auth;
pub mod backoff;
pub mod config;
pub mod credentials;
pub mod search;
pub mod xapi;
