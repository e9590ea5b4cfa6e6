pub mod aggregate;
pub mod config;
pub mod sentiment;
pub mod tweet;
pub mod window;
