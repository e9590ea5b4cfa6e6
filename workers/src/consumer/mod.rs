pub mod aggregate;
mod aggregate_stage;
mod merge;
mod merge_stage;
pub mod metrics;
mod offsets;
mod pace;
mod partials;
pub mod pipeline;
mod postgres;
mod probes;
mod sentiment;
#[cfg(test)]
mod simulation;
mod stage;
mod tweet;
pub mod window;
mod window_key;
