//! veltrix
pub mod config;
pub mod pipeline;
pub mod rules;
