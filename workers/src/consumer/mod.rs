pub mod config;
pub mod sentiment;
pub mod tweet;
