pub mod aggregate;
pub mod config;
pub mod merge;
pub mod sentiment;
pub mod tweet;
pub mod window;
