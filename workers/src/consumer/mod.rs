pub mod aggregate;
pub mod http;
pub mod merge;
pub mod metrics;
pub mod offsets;
pub mod output;
pub mod partials;
pub mod pipeline;
pub mod sentiment;
#[cfg(test)]
mod simulation;
pub mod source;
pub mod stage;
pub mod tweet;
pub mod window;
pub mod window_key;
