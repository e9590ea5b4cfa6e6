pub mod aggregate;
pub mod aggregate_stage;
pub mod http;
pub mod merge;
pub mod merge_stage;
pub mod metrics;
pub mod offsets;
pub mod partials;
pub mod pipeline;
pub mod sentiment;
#[cfg(test)]
mod simulation;
pub mod stage;
pub mod tweet;
pub mod window;
pub mod window_key;
