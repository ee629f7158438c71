//! veltrix
pub mod config;
pub mod pipeline;
pub mod rules;
pub mod targets;
